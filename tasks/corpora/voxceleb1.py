"""VoxCeleb1 -> ``sid`` manifests from the identification split (SUPERB SID: 1,251 speakers).

Standard layout::

    ROOT/wav/idXXXXX/VIDEO/NNNNN.wav        # or ROOT/{dev,test,vox1_dev_wav,...}/wav/..., merged
    ROOT/iden_split.txt                      # "1 id10001/1zcIwhmdeo4/00001.wav"; 1 train, 2 valid, 3 test

The official release ships the speakers in a dev and a test archive; each unpacks to its own
``wav`` folder, and every ``ROOT/*/wav`` is searched. The label is the speaker id.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path, PurePosixPath

from tasks.corpora.manifest import ManifestError
from tasks.corpora.prepare_common import (
    Utterance,
    check_audio,
    find_root,
    handle_bad,
    layout_error,
    write_corpus,
)

logger = logging.getLogger(__name__)

SPLIT_FILE = "iden_split.txt"
SPLIT_CODES = {"1": "train", "2": "valid", "3": "test"}
EXPECTED_LAYOUT = """\
  ROOT/wav/idXXXXX/VIDEO/NNNNN.wav   (or ROOT/dev/wav/..., ROOT/test/wav/...)
  ROOT/iden_split.txt                ("1 id10001/1zcIwhmdeo4/00001.wav" per line; 1 train, 2 valid, 3 test)"""


def find_wav_dirs(root: Path) -> list[Path]:
    """``ROOT/wav`` and every ``ROOT/*/wav`` that exist."""
    return [p for p in [root / "wav", *sorted(root.glob("*/wav"))] if p.is_dir()]


def prepare_voxceleb1(
    root: str | os.PathLike,
    out: str | os.PathLike,
    skip_bad: bool = False,
    split_file: str | os.PathLike | None = None,
) -> Path:
    """Write ``sid`` manifests for VoxCeleb1 under ``out``; returns ``out``.

    Args:
        root: the VoxCeleb1 folder (holding ``wav/`` or ``*/wav/``), or its parent.
        out: where manifests and ``corpus.json`` go.
        skip_bad: leave out unusable or missing audio (listed in ``corpus.json``) instead of failing.
        split_file: the identification split; default ``ROOT/iden_split.txt`` (or ``ROOT/*/iden_split.txt``).

    Raises:
        ManifestError: ``root`` is not VoxCeleb1, the split file is missing or malformed, or bad audio
            without ``skip_bad``.
    """
    corpus_root = find_root(root, lambda p: bool(find_wav_dirs(p)), nested=("VoxCeleb1", "voxceleb1", "vox1"))
    if corpus_root is None:
        raise layout_error("VoxCeleb1", root, "no wav/ folder (nor */wav/)", EXPECTED_LAYOUT)
    split_path = Path(split_file) if split_file is not None else _find_split_file(corpus_root)
    if split_path is None or not split_path.is_file():
        missing = f"split file {split_path} not found" if split_path else f"no {SPLIT_FILE} in it or in */"
        raise layout_error("VoxCeleb1", corpus_root, missing, EXPECTED_LAYOUT)

    speaker_dirs: dict[str, Path] = {}
    wav_dirs = find_wav_dirs(corpus_root)
    for wav_dir in wav_dirs:
        for speaker in wav_dir.iterdir():
            speaker_dirs.setdefault(speaker.name, wav_dir)

    utterances = []
    for relative, split in read_split_file(split_path):
        speaker = relative.parts[0]
        path = speaker_dirs.get(speaker, wav_dirs[0]) / Path(*relative.parts)
        utt_id = "-".join(relative.with_suffix("").parts)
        utterances.append(Utterance(utt_id, path, speaker, split, {"label": speaker}))
    good, bad = check_audio(utterances, "voxceleb1")
    skipped = handle_bad(bad, "voxceleb1", corpus_root, skip_bad)

    tables: dict[tuple[str, str], list[dict]] = {}
    for utt in good:
        tables.setdefault(("sid", utt.split), []).append(utt.row())
    unseen = {u.speaker for u in good if u.split != "train"} - {u.speaker for u in good if u.split == "train"}
    if unseen:
        logger.warning("voxceleb1: %d valid/test speaker(s) have no training audio, e.g. %s", len(unseen), min(unseen))
    params = {"split_file": str(split_path.absolute()), "skipped": skipped}
    return write_corpus(out, "voxceleb1", corpus_root, tables, {"sid": ["label"]}, params)


def read_split_file(path: Path) -> list[tuple[PurePosixPath, str]]:
    """``(relative wav path, split)`` for each line of an ``iden_split.txt``.

    Raises:
        ManifestError: naming the file and line of a malformed entry.
    """
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        relative = PurePosixPath(fields[-1]) if len(fields) == 2 else None
        if relative is None or fields[0] not in SPLIT_CODES or len(relative.parts) != 3 or relative.is_absolute():
            raise ManifestError(
                f"{path}:{number}: expected 'SPLIT SPEAKER/VIDEO/UTT.wav' with SPLIT 1 (train), 2 (valid) "
                f"or 3 (test), got {line.strip()!r}"
            )
        entries.append((relative, SPLIT_CODES[fields[0]]))
    if not entries:
        raise ManifestError(f"{path}: empty split file")
    return entries


def _find_split_file(root: Path) -> Path | None:
    candidates = [root / SPLIT_FILE, *sorted(root.glob(f"*/{SPLIT_FILE}"))]
    return next((p for p in candidates if p.is_file()), None)
