"""Speech Commands v0.02 -> ``words`` manifests with a speaker column (for layer analysis:
convexity of words and of speakers).

Standard layout (ROOT may be ``speech_commands_v0.02`` or the folder it was unpacked into)::

    ROOT/WORD/SPEAKERHASH_nohash_N.wav
    ROOT/validation_list.txt, ROOT/testing_list.txt   # "WORD/SPEAKERHASH_nohash_N.wav" per line
    ROOT/_background_noise_/                           # ignored

Files named in ``testing_list.txt`` are test, in ``validation_list.txt`` valid, all others train
(the dataset's own rule). The label is the word; the speaker is the hash before ``_nohash_``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from tasks.corpora.prepare_common import (
    Utterance,
    check_audio,
    find_root,
    handle_bad,
    layout_error,
    write_corpus,
)

LISTS = {"valid": "validation_list.txt", "test": "testing_list.txt"}
SPEAKER_MARK = "_nohash_"
EXPECTED_LAYOUT = """\
  ROOT/WORD/SPEAKERHASH_nohash_N.wav
  ROOT/validation_list.txt, ROOT/testing_list.txt   (ROOT = speech_commands_v0.02 or its parent)"""


def _has_lists(root: Path) -> bool:
    return all((root / name).is_file() for name in LISTS.values())


def speaker_of(path: Path) -> str:
    """The speaker hash of a clip (``0a7c2a8d`` for ``0a7c2a8d_nohash_1.wav``); the stem if unmarked."""
    return path.stem.split(SPEAKER_MARK)[0]


def prepare_speech_commands(
    root: str | os.PathLike,
    out: str | os.PathLike,
    skip_bad: bool = False,
    words: Sequence[str] | None = None,
) -> Path:
    """Write ``words`` manifests for Speech Commands v0.02 under ``out``; returns ``out``.

    Args:
        root: the ``speech_commands_v0.02`` folder, or its parent.
        out: where manifests and ``corpus.json`` go.
        skip_bad: leave out unusable or missing audio (listed in ``corpus.json``) instead of failing.
        words: keep only these words (default: every word folder).

    Raises:
        ManifestError: ``root`` is not Speech Commands, or bad audio without ``skip_bad``.
    """
    corpus_root = find_root(root, _has_lists, nested=("speech_commands_v0.02", "speech_commands"))
    if corpus_root is None:
        root = Path(root)
        missing = [name for name in LISTS.values() if not (root / name).is_file()]
        raise layout_error("Speech Commands v0.02", root, f"missing {', '.join(missing)}", EXPECTED_LAYOUT)
    word_dirs = sorted(p for p in corpus_root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
    if words is not None:
        absent = sorted(set(words) - {p.name for p in word_dirs})
        if absent:
            raise ValueError(f"speech_commands: no folder for word(s) {absent} in {corpus_root}")
        word_dirs = [p for p in word_dirs if p.name in set(words)]
    if not word_dirs:
        raise layout_error("Speech Commands v0.02", corpus_root, "no WORD/ folders", EXPECTED_LAYOUT)

    split_of: dict[str, str] = {}
    for split, name in LISTS.items():
        for line in (corpus_root / name).read_text(encoding="utf-8").splitlines():
            if line.strip():
                split_of[line.strip()] = split
    chosen = {p.name for p in word_dirs}
    on_disk = {f"{p.parent.name}/{p.name}" for d in word_dirs for p in d.glob("*.wav")}
    listed = {rel for rel in split_of if rel.split("/")[0] in chosen}  # listed clips that vanished are bad
    utterances = []
    for relative in sorted(on_disk | listed):
        path = corpus_root / relative
        word = relative.split("/")[0]
        utt_id = f"{word}-{path.stem}"
        split = split_of.get(relative, "train")
        utterances.append(Utterance(utt_id, path, speaker_of(path), split, {"label": word}))
    good, bad = check_audio(utterances, "speech_commands")
    skipped = handle_bad(bad, "speech_commands", corpus_root, skip_bad)

    tables: dict[tuple[str, str], list[dict]] = {}
    for utt in good:
        tables.setdefault(("words", utt.split), []).append(utt.row())
    params = {"words": sorted(chosen), "skipped": skipped}
    return write_corpus(out, "speech_commands", corpus_root, tables, {"words": ["label"]}, params)
