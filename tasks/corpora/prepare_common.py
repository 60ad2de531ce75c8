"""Steps every real-corpus preparer shares: find the corpus root, check the audio, report bad
files, and write manifests plus ``corpus.json`` (last, so an interrupted prepare is never taken as
complete).

A preparer lists the :class:`Utterance` s it wants, hands them to :func:`check_audio`, turns the
good ones into manifest rows, and calls :func:`write_corpus` with the bad ones. Audio stays in the
original tree; manifests hold absolute paths into it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from tasks.audio import MIN_SAMPLES, SAMPLE_RATE, AudioError, audio_info, check_finite
from tasks.corpora.manifest import (
    BASE_COLUMNS,
    CORPUS_INFO,
    SPLITS,
    CorpusInfo,
    ManifestError,
    corpus_fingerprint,
    summarize,
    write_manifest,
)

logger = logging.getLogger(__name__)

MAX_LISTED_BAD = 20  # bad files named in an error message; the rest are counted


@dataclass
class Utterance:
    """One audio file a preparer wants in its manifests.

    Attributes:
        id: unique id within its split.
        path: the audio file (absolute once written).
        speaker: speaker id as the corpus names it.
        split: ``train``, ``valid`` or ``test``.
        fields: the label columns (``transcription``, ``label``, ``labels``, ...).
        duration: seconds, filled in by :func:`check_audio`.
    """

    id: str
    path: Path
    speaker: str
    split: str
    fields: dict[str, str] = field(default_factory=dict)
    duration: float = 0.0

    def row(self, **extra: str) -> dict[str, Any]:
        """A manifest row: base columns, then this utterance's fields, then ``extra``."""
        return {
            "id": self.id,
            "wav_path": str(Path(self.path).absolute()),
            "duration": self.duration,
            "speaker": self.speaker,
            **self.fields,
            **extra,
        }


@dataclass(frozen=True)
class BadFile:
    """An audio file that cannot be used, and why."""

    path: Path
    reason: str


def find_root(root: str | os.PathLike, looks_right: Callable[[Path], bool], nested: Sequence[str]) -> Path | None:
    """Return ``root`` if it looks like the corpus, else the first ``root/child`` (``child`` in ``nested``)
    that does, else None. Lets users pass either the corpus folder or the folder it was unpacked into."""
    root = Path(root)
    for candidate in (root, *(root / child for child in nested)):
        if candidate.is_dir() and looks_right(candidate):
            return candidate
    return None


def layout_error(corpus: str, root: str | os.PathLike, missing: str, expected: str) -> ManifestError:
    """The error for a root that does not look like ``corpus``: what is missing, and the expected layout."""
    root = Path(root)
    where = f"{root} does not exist" if not root.exists() else f"{root} does not look like {corpus}: {missing}"
    return ManifestError(f"{where}. Expected layout:\n{expected.rstrip()}\nPass the corpus' root directory as --root.")


def check_audio(utterances: Sequence[Utterance], corpus: str) -> tuple[list[Utterance], list[BadFile]]:
    """Read each file's header: fill in durations, and set aside missing, unreadable, empty and
    too-short files (shorter than :data:`tasks.audio.MIN_SAMPLES` at 16 kHz), and floating-point
    files with NaN or infinite samples (their samples are read; integer formats cannot hold those).

    Returns:
        the usable utterances (in order) and the bad files.
    """
    good, bad = [], []
    for utt in tqdm(utterances, desc=f"{corpus}: checking audio", unit="file", disable=None, mininterval=1.0):
        try:
            rate, frames, _ = audio_info(utt.path)
            check_finite(utt.path)
        except AudioError as err:
            bad.append(BadFile(Path(utt.path), str(err).removeprefix(f"{utt.path}: ")))
            continue
        if frames == 0:
            bad.append(BadFile(Path(utt.path), "no audio samples"))
        elif frames * SAMPLE_RATE < MIN_SAMPLES * rate:
            ms = 1000 * frames / rate
            bad.append(BadFile(Path(utt.path), f"too short ({ms:.0f} ms; at least {MIN_SAMPLES * 1000 // SAMPLE_RATE} ms)"))
        else:
            utt.duration = round(frames / rate, 4)
            good.append(utt)
    return good, bad


def handle_bad(
    bad: Sequence[BadFile], corpus: str, root: str | os.PathLike, skip_bad: bool, what: str = "bad audio file(s)"
) -> list[dict[str, str]]:
    """Raise for bad files unless ``skip_bad``; return them as ``corpus.json`` entries.

    ``what`` names them in the message (``bad audio file(s)``, ``utterance(s) with words missing
    from the lexicon``, ...).

    Raises:
        ManifestError: naming the first :data:`MAX_LISTED_BAD` files, counting the rest, and
            pointing at ``--skip-bad``.
    """
    if bad and not skip_bad:
        lines = [f"  {b.path}: {b.reason}" for b in bad[:MAX_LISTED_BAD]]
        if len(bad) > MAX_LISTED_BAD:
            lines.append(f"  ... and {len(bad) - MAX_LISTED_BAD} more")
        raise ManifestError(
            f"{corpus} at {root}: {len(bad)} {what}:\n" + "\n".join(lines) + "\n"
            "Repair or remove them, or pass --skip-bad (skip_bad=True) to leave them out; "
            "skipped files are listed in corpus.json."
        )
    if bad:
        logger.warning("%s: leaving out %d %s, listed in corpus.json params.skipped", corpus, len(bad), what)
    return [{"path": str(b.path), "reason": b.reason} for b in bad]


def write_corpus(
    out: str | os.PathLike,
    name: str,
    source: str | os.PathLike,
    tables: Mapping[tuple[str, str], Iterable[dict[str, Any]]],
    columns: Mapping[str, Sequence[str]],
    params: dict[str, Any],
) -> Path:
    """Write ``tables[(task, split)]`` as manifests, then ``corpus.json``.

    Any ``corpus.json`` already in ``out`` is removed first and the new one is written last, so a
    prepare that stops half-way leaves a directory that is not taken as a corpus. Manifests of the
    same tasks left from an earlier prepare (a split no longer made) are removed.

    Args:
        columns: task -> manifest columns after :data:`~tasks.corpora.manifest.BASE_COLUMNS`.

    Raises:
        ManifestError: ``out`` holds a different corpus, or a split has no usable rows.
    """
    out = Path(out)
    info_path = out / CORPUS_INFO
    if info_path.is_file():
        previous = CorpusInfo.read(out).name
        if previous != name:
            raise ManifestError(f"{out} already holds corpus {previous!r}; choose another --out for {name}")
        info_path.unlink()
    frames = {}
    for (task, split), rows in tables.items():
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; splits are {SPLITS}")
        frame = pd.DataFrame(list(rows), columns=[*BASE_COLUMNS, *columns[task]])
        if frame.empty:
            raise ManifestError(f"{name}: no usable audio for {task}/{split} under {source}")
        frames[task, split] = frame
    for task in {task for task, _ in tables}:
        for stale in sorted((out / "manifests" / task).glob("*.csv")):
            if (task, stale.stem) not in tables:
                stale.unlink()
    for (task, split), frame in tqdm(frames.items(), desc=f"{name}: writing manifests", disable=None):
        write_manifest(frame, out, task, split)
    counts, hours = summarize(out)
    info = CorpusInfo(name=name, source=str(source), params=params, counts=counts, hours=round(hours, 4))
    info.fingerprint = corpus_fingerprint(out)
    info.write(out)
    logger.info("%s: %s", name, ", ".join(f"{t}/{s} {n}" for t, splits in counts.items() for s, n in splits.items()))
    return out
