"""SynthSpeech: the embedded default corpus, synthesised locally with eSpeak NG.

A speaker is a fixed combination of accent, voice variant, pitch, pitch range, speaking rate, word
gap and a recording channel (band limits, noise level, loudness); each utterance jitters those
settings a little, so speaker identity is learnable but not trivial. Three kinds of utterances:

* ``sentence``: read sentences -> manifests ``asr``, ``pr`` and ``sid``. Sentence texts are split
  into train/valid/test, so no test sentence occurs in training; every speaker reads in every split.
* ``command``: Fluent-Speech-Commands-style commands -> ``slu``; phrasings are split the same way.
* ``word``: Speech-Commands-style one-second single-word clips -> ``words``, split by speaker.

Generation is deterministic (one seeded generator per utterance), parallel, resumable: each wav is
written atomically and logged to ``progress.jsonl``; ``corpus.json`` is written last and marks the
corpus complete. See :mod:`tasks.corpora.manifest` for the layout.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from core.files import atomic_open
from tasks.corpora import synth_audio, synth_text
from tasks.corpora.checksums import write_checksums
from tasks.corpora.manifest import (
    CHECKSUMS,
    CorpusInfo,
    corpus_fingerprint,
    summarize,
    write_manifest,
)
from tasks.corpora.synth_audio import Job, Speaker, make_speakers
from tasks.corpora.synth_sizes import DEFAULT_SIZE, PRESETS, SynthPreset  # noqa: F401 - re-exported

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
PROGRESS = "progress.jsonl"


SPLIT_FRACTIONS = (0.8, 0.1, 0.1)


def _split_counts(total: int, test_size: int | None = None) -> list[tuple[str, int]]:
    """Utterances per split for one speaker: ``total`` split 80/10/10, or, with ``test_size``,
    train and valid as before and ``test_size`` test utterances on top."""
    valid = max(1, round(total * SPLIT_FRACTIONS[1]))
    test = max(1, round(total * SPLIT_FRACTIONS[2]))
    return [("train", total - valid - test), ("valid", valid), ("test", test if test_size is None else test_size)]


def plan_jobs(preset: SynthPreset, seed: int) -> list[Job]:
    """Every utterance of the corpus, in a fixed order, each with its own seed."""
    rng = np.random.default_rng(seed)
    speakers = make_speakers(preset.speakers, rng)
    pool = synth_text.make_sentences(preset.sentence_pool, rng)
    sentence_splits = dict(zip(("train", "valid", "test"), _partition(pool, rng), strict=True))
    command_splits = synth_text.split_command_phrasings(rng)
    intents = list(synth_text.COMMAND_PHRASES)
    word_split = dict(zip([s.id for s in speakers], _speaker_splits(len(speakers), rng), strict=True))

    jobs: list[Job] = []
    per_speaker: dict[tuple[str, str], int] = {}

    def add(kind: str, speaker: Speaker, text: str, split: str, intent=None) -> None:
        count = per_speaker[speaker.id, kind] = per_speaker.get((speaker.id, kind), -1) + 1
        utt_id = f"{speaker.id}-{kind[0]}{count:04d}"
        jobs.append(Job(len(jobs), utt_id, kind, speaker, text, split, intent, int(rng.integers(2**31))))

    for speaker in speakers:
        for split, n in _split_counts(preset.sentences_per_speaker, preset.test_sentences_per_speaker):
            for text in rng.choice(sentence_splits[split], size=n, replace=n > len(sentence_splits[split])):
                add("sentence", speaker, str(text), split)
        for split, n in _split_counts(preset.commands_per_speaker, preset.test_commands_per_speaker):
            for _ in range(n):
                intent = intents[rng.integers(len(intents))]
                phrasings = command_splits[split][intent]
                add("command", speaker, phrasings[rng.integers(len(phrasings))], split, intent)
        words = rng.permutation(synth_text.COMMAND_WORDS)
        for k in range(preset.words_per_speaker):
            add("word", speaker, str(words[k % len(words)]), word_split[speaker.id])
    return jobs


def _partition(items: list[str], rng: np.random.Generator) -> list[list[str]]:
    order = rng.permutation(len(items))
    n_valid = max(1, round(len(items) * SPLIT_FRACTIONS[1]))
    n_test = max(1, round(len(items) * SPLIT_FRACTIONS[2]))
    shuffled = [items[i] for i in order]
    return [shuffled[n_valid + n_test :], shuffled[:n_valid], shuffled[n_valid : n_valid + n_test]]


def _speaker_splits(count: int, rng: np.random.Generator) -> list[str]:
    labels = ["train"] * count
    order = rng.permutation(count)
    n_valid = max(1, round(count * SPLIT_FRACTIONS[1]))
    n_test = max(1, round(count * SPLIT_FRACTIONS[2]))
    for i in order[:n_valid]:
        labels[i] = "valid"
    for i in order[n_valid : n_valid + n_test]:
        labels[i] = "test"
    return labels


def synthesize_corpus(out: str | os.PathLike, preset: str = DEFAULT_SIZE, seed: int = 0, workers: int | None = None) -> Path:
    """Generate (or reuse, or resume) SynthSpeech in ``out``; returns the corpus root.

    Raises:
        ValueError: unknown preset, or ``out`` holds something else (another preset/seed, or foreign files).
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown SynthSpeech preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers} (None: one per CPU core)")
    root = Path(out)
    params = {"preset": preset, "seed": seed, "format_version": FORMAT_VERSION, **PRESETS[preset].params()}
    if _reuse_complete(root, params):
        return root
    done = _resume_or_reset(root, params)

    started = time.perf_counter()
    jobs = plan_jobs(PRESETS[preset], seed)
    todo = [(job, str(root)) for job in jobs if job.id not in done]
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    logger.info("SynthSpeech %s (seed %d): %d utterances, %d to synthesise with %d workers", preset, seed, len(jobs), len(todo), workers)
    with open(root / PROGRESS, "a", encoding="utf-8") as progress:
        rows = _run_jobs(todo, workers)
        for row in tqdm(rows, total=len(todo), desc="synthesising", unit="utt", disable=not todo):
            done[row["id"]] = row
            progress.write(json.dumps(row, ensure_ascii=False) + "\n")
            progress.flush()

    rows = sorted(done.values(), key=lambda r: r["index"])
    _write_outputs(root, rows)
    counts, hours = summarize(root)
    CorpusInfo(
        name="synthspeech", source=f"SynthSpeech {preset}", params=params, counts=counts, hours=round(hours, 4),
        fingerprint=corpus_fingerprint(root),
    ).write(root)  # fmt: skip
    (root / PROGRESS).unlink()
    elapsed = time.perf_counter() - started
    logger.info(
        "SynthSpeech: %.1f min of audio in %.1f s (%.0fx real time)", hours * 60, elapsed, hours * 3600 / max(elapsed, 1e-9)
    )
    return root


def _run_jobs(todo: list[tuple[Job, str]], workers: int):
    """Rows of the finished jobs, in order. Workers are fresh processes, so eSpeak in them has never spoken."""
    if not todo:
        return
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(synth_audio.synthesize_in_fork, todo, chunksize=8)


def _reuse_complete(root: Path, params: dict) -> bool:
    if not (root / "corpus.json").is_file():
        return False
    info = CorpusInfo.read(root)
    if info.name == "synthspeech" and info.params == params:
        logger.info("reusing the complete SynthSpeech corpus at %s", root)
        return True
    raise ValueError(
        f"{root} already holds a different corpus ({info.source}, params {info.params}); "
        f"choose another --out or delete it"
    )


def _resume_or_reset(root: Path, params: dict) -> dict[str, dict]:
    """Rows already done by an interrupted run with the same params; otherwise start clean."""
    progress = root / PROGRESS
    header = {"synthspeech": params}
    if progress.is_file():
        lines = progress.read_text(encoding="utf-8").splitlines()
        if lines and json.loads(lines[0]) == header:
            done = {}
            for line in lines[1:]:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # the line being written when the run was killed
                    continue
                if (root / row["wav_path"]).is_file():
                    done[row["id"]] = row
            logger.info("resuming an interrupted SynthSpeech run in %s: %d utterances already done", root, len(done))
            return done
        logger.info("%s holds an interrupted SynthSpeech run with other settings; starting over", root)
    elif root.exists() and any(root.iterdir()):
        raise ValueError(f"{root} is not empty and is not a SynthSpeech corpus; choose another --out")
    for name in ("wavs", "manifests"):
        shutil.rmtree(root / name, ignore_errors=True)
    for name in (CHECKSUMS, "corpus.json"):
        (root / name).unlink(missing_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    with atomic_open(progress) as f:
        f.write(json.dumps(header) + "\n")
    return {}


TASKS_BY_KIND = {"sentence": ("asr", "pr", "sid"), "command": ("slu",), "word": ("words",)}


def _write_outputs(root: Path, rows: list[dict]) -> None:
    """Manifests for every task and split, and the checksum file."""
    for kind, tasks in TASKS_BY_KIND.items():
        for split in ("train", "valid", "test"):
            chosen = [r for r in rows if r["kind"] == kind and r["split"] == split]
            for task in tasks:
                write_manifest([_manifest_row(r, task) for r in chosen], root, task, split)
    write_checksums(root, ((row["sha256"], row["wav_path"]) for row in rows))


def _manifest_row(row: dict, task: str) -> dict:
    out = {"id": row["id"], "wav_path": row["wav_path"], "duration": row["duration"], "speaker": row["speaker"]}
    if task == "pr":
        out["transcription"] = row["phones"]
    else:
        out["transcription"] = row["text"].upper() if task == "asr" else row["text"]
    if task == "sid":
        out["label"] = row["speaker"]
    elif task == "slu":
        out["labels"] = row["intent"]
    elif task == "words":
        out["label"] = row["text"]
    out["word_alignment"] = row["word_alignment"]
    out["phone_alignment"] = row["phone_alignment"]
    return out
