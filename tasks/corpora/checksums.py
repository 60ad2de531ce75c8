"""The corpus checksum file, ``ROOT/checksums.sha256``: its one reader and its one writer.

The file is in ``sha256sum``'s format (``<hex digest>  <path relative to ROOT>``, one line per
audio file; a ``*`` before the path, sha256sum's binary marker, is accepted). SynthSpeech writes it;
a prepared real corpus may carry one. It serves two readers: the feature cache identifies audio by
content where the file names it (:func:`audio_identity`, so a moved corpus keeps its cache), and
:func:`verify_corpus` finds files that changed since the corpus was made.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from core.files import atomic_open, sha256_file
from tasks.corpora.manifest import CHECKSUMS


def read_checksum_lines(corpus_root: str | os.PathLike) -> list[tuple[str, str]]:
    """``(digest, relative path)`` per line of ``ROOT/checksums.sha256``; empty when there is none."""
    path = Path(corpus_root) / CHECKSUMS
    if not path.is_file():
        return []
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise ValueError(f"{path}:{number}: expected '<sha256>  <path>', got {line!r}; regenerate the corpus")
        entries.append((parts[0], parts[1].lstrip("*")))
    return entries


def read_checksums(corpus_root: str | os.PathLike) -> dict[str, str]:
    """Absolute wav path -> SHA-256 from ``ROOT/checksums.sha256`` (empty when the corpus has none)."""
    root = Path(corpus_root)
    return {str((root / name).resolve()): digest for digest, name in read_checksum_lines(root)}


def write_checksums(corpus_root: str | os.PathLike, entries: Iterable[tuple[str, str]]) -> None:
    """Write ``(digest, relative path)`` pairs as ``ROOT/checksums.sha256`` (atomically), sorted by path."""
    with atomic_open(Path(corpus_root) / CHECKSUMS) as f:
        for digest, name in sorted(entries, key=lambda entry: entry[1]):
            f.write(f"{digest}  {name}\n")


def verify_corpus(corpus_root: str | os.PathLike) -> list[str]:
    """Relative paths whose audio no longer matches ``checksums.sha256`` (empty when the corpus is intact)."""
    root = Path(corpus_root)
    return [name for digest, name in read_checksum_lines(root)
            if not (root / name).is_file() or sha256_file(root / name) != digest]  # fmt: skip


def audio_identity(wav_path: str | os.PathLike, checksums: dict[str, str]) -> str:
    """Content hash when known, else ``path|size|mtime_ns`` (cheap, and changes when the file does)."""
    path = Path(wav_path).resolve()
    if str(path) in checksums:
        return "sha256:" + checksums[str(path)]
    stat = path.stat()
    return f"file:{path}|{stat.st_size}|{stat.st_mtime_ns}"
