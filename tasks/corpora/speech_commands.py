"""Speech Commands (v0.01 = v1.0, or v0.02) -> ``words`` manifests with a speaker column (for
layer analysis: convexity of words and of speakers) and ``ks`` manifests (SUPERB's keyword spotting).

Standard layout, the same in both versions (ROOT may be ``speech_commands_v0.02`` or the folder it
was unpacked into)::

    ROOT/WORD/SPEAKERHASH_nohash_N.wav
    ROOT/validation_list.txt, ROOT/testing_list.txt   # "WORD/SPEAKERHASH_nohash_N.wav" per line
    ROOT/_background_noise_/*.wav                      # long noise recordings

Files named in ``testing_list.txt`` are test, in ``validation_list.txt`` valid, all others train
(the dataset's own rule). The label is the word; the speaker is the hash before ``_nohash_``.

The ``ks`` manifests hold the same clips (the task maps every word outside its ten keywords to
``_unknown_``) plus ``_silence_`` clips: one-second crops of the background-noise recordings,
written to ``OUT/ks_silence/SPLIT/``, as many per split as an average word class has (at least
one), cut at seeded positions from disjoint parts of each recording (the first 80 % for train,
the next 10 % for valid, the last 10 % for test). Without ``_background_noise_`` the ``ks``
manifests have no ``_silence_`` clips and ``corpus.json`` says so (``params.ks_silence``).
"""

from __future__ import annotations

import logging
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

logger = logging.getLogger(__name__)

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
        tables.setdefault(("ks", utt.split), []).append(utt.row())
    noise = sorted((corpus_root / NOISE_DIR).glob("*.wav"))
    if noise:
        for split in ("train", "valid", "test"):
            count = max(1, round(len(tables.get(("ks", split), [])) / max(1, len(chosen))))
            tables.setdefault(("ks", split), []).extend(silence_rows(noise, Path(out) / "ks_silence" / split, split, count))
        silence = f"{len(noise)} background-noise recordings, cropped to 1 s"
    else:
        silence = f"none: no {NOISE_DIR}/ folder, so the ks manifests have no {SILENCE} clips"
        logger.warning("speech_commands: %s", silence)
    params = {"words": sorted(chosen), "skipped": skipped, "ks_silence": silence}
    return write_corpus(out, "speech_commands", corpus_root, tables, {"words": ["label"], "ks": ["label"]}, params)


NOISE_DIR = "_background_noise_"
SILENCE = "_silence_"
#: Where each split's silence crops come from, as fractions of each noise recording.
SILENCE_SPANS = {"train": (0.0, 0.8), "valid": (0.8, 0.9), "test": (0.9, 1.0)}


def silence_rows(noise: Sequence[Path], folder: Path, split: str, count: int) -> list[dict]:
    """Write ``count`` one-second crops of the noise recordings into ``folder``; their ks rows."""
    import numpy as np
    import soundfile as sf

    from core.audio import SAMPLE_RATE
    from tasks.audio import load_audio

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([0, list(SILENCE_SPANS).index(split)])
    recordings = [load_audio(path).numpy() for path in noise]
    low, high = SILENCE_SPANS[split]
    rows = []
    for i in range(count):
        k = i % len(recordings)
        audio = recordings[k]
        first, last = int(low * len(audio)), int(high * len(audio)) - SAMPLE_RATE
        start = int(rng.integers(first, max(first, last) + 1))
        clip = audio[start : start + SAMPLE_RATE]
        clip = np.pad(clip, (0, SAMPLE_RATE - len(clip)))  # a recording shorter than its span: padded
        path = folder / f"silence-{i:04d}.wav"
        sf.write(path, clip.astype(np.float32), SAMPLE_RATE)
        rows.append({"id": f"{SILENCE}-{split}-{i:04d}", "wav_path": str(path.resolve()), "duration": 1.0,
                     "speaker": noise[k].stem, "label": SILENCE})  # fmt: skip
    return rows
