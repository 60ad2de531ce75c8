"""Fluent Speech Commands -> ``slu`` manifests (SUPERB IC: action, object, location).

Standard layout (ROOT may be ``fluent_speech_commands_dataset`` or the folder it was unpacked into)::

    ROOT/data/{train,valid,test}_data.csv   # ",path,speakerId,transcription,action,object,location"
    ROOT/wavs/speakers/SPEAKER/UUID.wav     # ``path`` in the CSVs is relative to ROOT

``labels`` is ``"action ; object ; location"`` (:data:`~tasks.corpora.manifest.SLU_SEPARATOR`);
the spoken ``transcription`` is kept as written.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from tasks.corpora.manifest import SLU_SEPARATOR, SPLITS, ManifestError
from tasks.corpora.prepare_common import (
    Utterance,
    check_audio,
    find_root,
    handle_bad,
    layout_error,
    write_corpus,
)

CSV_COLUMNS = ["path", "speakerId", "transcription", "action", "object", "location"]
EXPECTED_LAYOUT = """\
  ROOT/data/train_data.csv, valid_data.csv, test_data.csv  (columns: ,path,speakerId,transcription,action,object,location)
  ROOT/wavs/speakers/SPEAKER/UUID.wav                      (ROOT = fluent_speech_commands_dataset or its parent)"""


def _split_csv(root: Path, split: str) -> Path:
    return root / "data" / f"{split}_data.csv"


def _has_split_csvs(root: Path) -> bool:
    return all(_split_csv(root, split).is_file() for split in SPLITS)


def prepare_fluent_commands(root: str | os.PathLike, out: str | os.PathLike, skip_bad: bool = False) -> Path:
    """Write ``slu`` manifests for Fluent Speech Commands under ``out``; returns ``out``.

    Args:
        root: the ``fluent_speech_commands_dataset`` folder, or its parent.
        out: where manifests and ``corpus.json`` go.
        skip_bad: leave out unusable or missing audio (listed in ``corpus.json``) instead of failing.

    Raises:
        ManifestError: ``root`` is not Fluent Speech Commands, a CSV lacks a column, or bad audio
            without ``skip_bad``.
    """
    corpus_root = find_root(root, _has_split_csvs, nested=("fluent_speech_commands_dataset",))
    if corpus_root is None:
        root = Path(root)
        missing = [_split_csv(root, s).relative_to(root).as_posix() for s in SPLITS if not _split_csv(root, s).is_file()]
        raise layout_error("Fluent Speech Commands", root, f"missing {', '.join(missing)}", EXPECTED_LAYOUT)

    utterances = []
    for split in SPLITS:
        csv = _split_csv(corpus_root, split)
        frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
        absent = [c for c in CSV_COLUMNS if c not in frame.columns]
        if absent:
            raise ManifestError(f"{csv}: missing column(s) {absent}; expected {CSV_COLUMNS}")
        for row in frame.itertuples(index=False):
            path = corpus_root / row.path
            labels = SLU_SEPARATOR.join([row.action, row.object, row.location])
            fields = {"labels": labels, "transcription": row.transcription}
            utterances.append(Utterance(Path(row.path).stem, path, row.speakerId, split, fields))
    good, bad = check_audio(utterances, "fluent_commands")
    skipped = handle_bad(bad, "fluent_commands", corpus_root, skip_bad)

    tables: dict[tuple[str, str], list[dict]] = {}
    for utt in good:
        tables.setdefault(("slu", utt.split), []).append(utt.row())
    params = {"skipped": skipped}
    return write_corpus(out, "fluent_commands", corpus_root, tables, {"slu": ["labels", "transcription"]}, params)
