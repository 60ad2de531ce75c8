"""The on-disk layout every corpus is written in, SynthSpeech and real corpora alike.

A prepared corpus is a directory::

    ROOT/
      corpus.json                 # what it is and how it was made; written last = complete
      manifests/{task}/{split}.csv
      checksums.sha256            # SynthSpeech only: `sha256sum -c` format, one line per wav
      wavs/...                    # SynthSpeech only; real corpora point into their own tree

Manifests follow the column conventions of s3prl's SUPERB problems:

=======  ==============================================  ====================================
task     label column                                    meaning
=======  ==============================================  ====================================
asr      ``transcription``                               upper-case words
pr       ``transcription``                               space-separated IPA phones
sid      ``label``                                       speaker id
slu      ``labels``                                      ``"action ; object ; location"``
words    ``label``                                       the single spoken word
ks       ``label``                                       a word, or ``_silence_`` (noise crops)
=======  ==============================================  ====================================

Every manifest also has ``id``, ``wav_path`` (relative to ROOT, or absolute for real corpora),
``duration`` (seconds) and ``speaker``. SynthSpeech adds ``transcription`` to sid/slu/words,
and ``word_alignment`` / ``phone_alignment``: JSON lists of ``[label, start_s, end_s]``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from core.files import atomic_open, sha256_file, write_json
from tasks.corpora.alignment import format_alignment, parse_alignment  # noqa: F401  (re-exported)

SPLITS = ("train", "valid", "test")
TASK_LABEL_COLUMN = {"asr": "transcription", "pr": "transcription", "sid": "label", "slu": "labels", "words": "label",
                     "ks": "label"}  # fmt: skip
BASE_COLUMNS = ["id", "wav_path", "duration", "speaker"]
ALIGNMENT_COLUMNS = ["word_alignment", "phone_alignment"]
CORPUS_INFO = "corpus.json"
CHECKSUMS = "checksums.sha256"
SLU_SEPARATOR = " ; "


logger = logging.getLogger(__name__)
_EDITED: set[tuple[str, str]] = set()  # (corpus.json, fingerprint) already warned about


class ManifestError(ValueError):
    """A corpus directory or manifest that cannot be used; the message names it and says what to do."""


@dataclass
class CorpusInfo:
    """Contents of ``corpus.json``: the record that a corpus is complete and how it was made."""

    name: str  # "synthspeech", "librispeech", ...
    source: str  # where the audio came from (a preset, or the original corpus root)
    params: dict[str, Any] = field(default_factory=dict)  # preset, seed, ... everything that made it
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # task -> split -> rows
    hours: float = 0.0
    fingerprint: str = ""  # hash of the manifests (and checksums) as read (see read); identifies the corpus in records
    format_version: int = 1

    def write(self, root: str | os.PathLike) -> None:
        write_json(Path(root) / CORPUS_INFO, asdict(self))

    @classmethod
    def read(cls, root: str | os.PathLike) -> CorpusInfo:
        """``corpus.json``, its ``fingerprint`` computed from the manifests as they are now (a
        manifest edited after preparation changes it; a warning says so, once per corpus)."""
        path = Path(root) / CORPUS_INFO
        if not path.is_file():
            raise ManifestError(
                f"{root} is not a complete corpus (no {CORPUS_INFO}); prepare it with "
                f"`harness corpus synth` or `harness corpus prepare`"
            )
        try:
            info = cls(**json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, TypeError) as err:
            raise ManifestError(f"{path} is damaged ({err}); prepare the corpus again") from None
        current = corpus_fingerprint(root)
        if current != info.fingerprint and (str(path), current) not in _EDITED:
            _EDITED.add((str(path), current))
            logger.warning("%s: the manifests changed since the corpus was prepared; its fingerprint is now %s "
                           "(was %s), and records made now carry the new one", root, current[:12], info.fingerprint[:12])  # fmt: skip
        info.fingerprint = current
        return info


def manifest_path(root: str | os.PathLike, task: str, split: str) -> Path:
    return Path(root) / "manifests" / task / f"{split}.csv"


def write_manifest(rows: pd.DataFrame | list[dict], root: str | os.PathLike, task: str, split: str) -> Path:
    """Validate and write one manifest CSV atomically; returns its path."""
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    _check_columns(frame, task, f"manifest {task}/{split}")
    if frame["id"].duplicated().any():
        dup = frame.loc[frame["id"].duplicated(), "id"].iloc[0]
        raise ManifestError(f"manifest {task}/{split}: duplicate id {dup!r}")
    path = manifest_path(root, task, split)
    with atomic_open(path, newline="") as f:
        frame.to_csv(f, index=False)
    return path


def read_manifest(root: str | os.PathLike, task: str, split: str, resolve: bool = True) -> pd.DataFrame:
    """Read and check one manifest; with ``resolve``, ``wav_path`` becomes absolute and every wav must exist.

    A manifest edited by hand is refused with its file and line: a duration that is not a positive
    number, a duplicate id, a wav that does not exist.
    """
    root = Path(root)
    path = manifest_path(root, task, split)
    if not path.is_file():
        have = sorted(p.parent.name + "/" + p.stem for p in (root / "manifests").glob("*/*.csv"))
        raise ManifestError(f"{path}: no such manifest; {root} has: {', '.join(have) or 'none'}")
    try:
        frame = pd.read_csv(path, dtype={"id": str, "speaker": str, "label": str, "duration": str}, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        raise ManifestError(f"{path}: not a readable CSV manifest ({err}); fix it or prepare the corpus again") from None
    _check_columns(frame, task, str(path))
    frame["duration"] = _check_rows(frame, path)
    if resolve:
        frame["wav_path"] = [p if os.path.isabs(p) else str(root / p) for p in frame["wav_path"]]
        missing = [i for i, wav in enumerate(frame["wav_path"]) if not os.path.isfile(wav)]
        if missing:
            i = missing[0]
            more = f" ({len(missing) - 1} more rows name missing files)" if len(missing) > 1 else ""
            raise ManifestError(f"{_where(path, frame, i)}: {frame['wav_path'].iloc[i]} does not exist{more}; "
                                "restore the audio or remove the row")  # fmt: skip
    return frame


def _where(path: Path, frame: pd.DataFrame, i: int) -> str:
    """``manifest line N (id X)`` of row ``i`` (line 1 is the header)."""
    return f"{path} line {i + 2} (id {frame['id'].iloc[i]!r})"


def _check_rows(frame: pd.DataFrame, path: Path) -> pd.Series:
    """Raise :class:`ManifestError` naming the line of a bad duration or a duplicate id; returns the
    durations as numbers."""
    durations = pd.to_numeric(frame["duration"], errors="coerce")
    bad = [i for i, value in enumerate(durations) if not value > 0 or value == float("inf")]
    if bad:
        raise ManifestError(f"{_where(path, frame, bad[0])}: duration {frame['duration'].iloc[bad[0]]!r} is not a "
                            "positive number of seconds; fix the row or prepare the corpus again")  # fmt: skip
    repeated = frame["id"].duplicated(keep=False)
    if repeated.any():
        first = frame["id"][repeated].iloc[0]
        lines = [str(i + 2) for i in frame.index[frame["id"] == first]]
        raise ManifestError(f"{path}: id {first!r} is on lines {', '.join(lines)}; ids must be unique: remove or rename the repeats")
    return durations.astype(float)


def corpus_fingerprint(root: str | os.PathLike) -> str:
    """Hash of everything that defines a corpus' content: its manifests and its audio checksums."""
    import hashlib

    root = Path(root)
    digest = hashlib.sha256()
    files = sorted((root / "manifests").glob("*/*.csv"))
    if (root / CHECKSUMS).is_file():
        files.append(root / CHECKSUMS)
    for file in files:
        digest.update(file.relative_to(root).as_posix().encode())
        digest.update(bytes.fromhex(sha256_file(file)))
    return digest.hexdigest()


def summarize(root: str | os.PathLike) -> tuple[dict[str, dict[str, int]], float]:
    """Row counts per task and split, and the hours of distinct audio, from the manifests on disk."""
    root = Path(root)
    counts: dict[str, dict[str, int]] = {}
    durations: dict[str, float] = {}
    for path in sorted((root / "manifests").glob("*/*.csv")):
        frame = pd.read_csv(path, usecols=["wav_path", "duration"], keep_default_na=False)
        counts.setdefault(path.parent.name, {})[path.stem] = len(frame)
        durations.update(zip(frame["wav_path"], frame["duration"].astype(float), strict=True))
    return counts, sum(durations.values()) / 3600


def _check_columns(frame: pd.DataFrame, task: str, where: str) -> None:
    if task not in TASK_LABEL_COLUMN:
        raise ManifestError(f"{where}: unknown task {task!r}; known: {', '.join(TASK_LABEL_COLUMN)}")
    missing = [c for c in [*BASE_COLUMNS, TASK_LABEL_COLUMN[task]] if c not in frame.columns]
    if missing:
        raise ManifestError(f"{where}: missing columns {missing}; has {list(frame.columns)}")
