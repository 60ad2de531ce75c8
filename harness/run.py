"""``harness run``: compress, register, evaluate, compare, publish, as one resumable pipeline.

1. the corpus (SynthSpeech tiny by default, generated on first use) and the teacher (the embedded
   SynthSpeech HuBERT by default; any spec ``upstreams.load_upstream`` takes);
2. each compression method (convexity once; DPHuBERT once per sparsity level) writes a compact
   checkpoint under ``OUT/<method>[-<sparsity>]``; a finished checkpoint is reused;
3. every compact model is evaluated as the s3prl upstream ``--upstream`` (``pruned_hubert``, ...),
   together with the unpruned teacher (converted to a compact checkpoint, the reference) and FBANK
   (the score's zero point); an (upstream, checkpoint, task, corpus, preset) with a record is skipped;
4. the leaderboard is regenerated from all records and printed.

A failure in one method or one evaluation is logged with its cause and the pipeline goes on; the
run ends with a list of what failed and a non-zero exit code, and keeps everything that worked.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from harness.defaults import DEFAULT_TEACHER

logger = logging.getLogger(__name__)

FBANK = "fbank"


@dataclass
class RunConfig:
    """One ``harness run``; see ``harness run --help``."""

    upstream: str = "pruned_hubert"
    tasks: list[str] = field(default_factory=lambda: ["asr", "sid"])
    methods: list[str] = field(default_factory=lambda: ["convexity", "dphubert"])
    teacher: str = str(DEFAULT_TEACHER)
    corpus: str = "synth"
    preset: str = "demo"
    sparsities: list[float] = field(default_factory=lambda: [0.75])
    device: str = "auto"
    out: Path = Path("runs/run")
    records_dir: Path = Path("runs/records")
    leaderboard_dir: Path = Path("runs/leaderboard")
    cache_dir: Path = Path("data/cache")
    seed: int = 0
    max_steps: int | None = None
    command: str | None = None


@dataclass
class Candidate:
    """One upstream to evaluate: an s3prl hub name and its checkpoint (None for FBANK)."""

    label: str
    upstream: str
    ckpt: str | None


def run(config: RunConfig) -> int:
    """Run the pipeline; returns 0 when every step worked, 1 when some failed (the rest is kept)."""
    from harness.commands.evaluate import resolve_corpus
    from harness.compression.methods import METHODS
    from harness.evaluate import check_upstream_name
    from tasks.registry import get_task

    for name in config.methods:
        METHODS.get(name)  # unknown names fail before any work, with the known ones listed
    for name in config.tasks:
        get_task(name)
    check_upstream_name(config.upstream)
    corpus = resolve_corpus(config.corpus)
    device = None if config.device == "auto" else config.device
    failures: list[str] = []

    candidates = [Candidate("fbank", FBANK, None)]
    try:
        candidates.append(Candidate("teacher", config.upstream, str(_teacher_checkpoint(config))))
    except Exception as err:  # noqa: BLE001 - reported, and the other steps go on
        failures.append(_failed("teacher conversion", err))

    for method, out in _compression_jobs(config):
        if _is_complete_checkpoint(out):
            logger.info("%s: reusing the finished checkpoint %s", out.name, out)
        else:
            logger.info("%s: compressing %s into %s", method, config.teacher, out)
            options = {"sparsity": float(out.name.rsplit("-", 1)[1])} if method == "dphubert" else {}
            try:
                METHODS.get(method)(config.teacher, out, corpus=corpus, preset=config.preset, device=device,
                                    seed=config.seed, **options)  # fmt: skip
            except Exception as err:  # noqa: BLE001
                failures.append(_failed(f"compression {out.name}", err))
                continue
        candidates.append(Candidate(out.name, config.upstream, str(out)))

    for candidate in candidates:
        for task in config.tasks:
            if _has_record(config, candidate, task, corpus):
                logger.info("%s / %s: record exists, skipped", candidate.label, task)
                continue
            try:
                _evaluate(config, candidate, task, corpus)
            except Exception as err:  # noqa: BLE001
                failures.append(_failed(f"evaluation {candidate.label} / {task}", err))

    _publish(config)
    if failures:
        logger.error("%d step(s) failed; everything else is kept:\n  %s", len(failures), "\n  ".join(failures))
        return 1
    return 0


def _compression_jobs(config: RunConfig) -> list[tuple[str, Path]]:
    jobs = []
    for method in config.methods:
        if method == "dphubert":
            jobs += [(method, config.out / f"dphubert-{sparsity:g}") for sparsity in config.sparsities]
        else:
            jobs.append((method, config.out / method))
    return jobs


def _teacher_checkpoint(config: RunConfig) -> Path:
    """The teacher as a compact checkpoint, so that it loads through the same s3prl entry."""
    from upstreams import load_upstream
    from upstreams.checkpoint import is_compact_checkpoint

    if is_compact_checkpoint(config.teacher):
        return Path(config.teacher)
    out = config.out / "teacher"
    if not _is_complete_checkpoint(out):
        load_upstream(config.teacher).save(out, metadata={"source": config.teacher})
    return out


def _is_complete_checkpoint(path: Path) -> bool:
    from upstreams.checkpoint import is_compact_checkpoint

    return is_compact_checkpoint(path) and (path / "model.safetensors").is_file()


def _has_record(config: RunConfig, candidate: Candidate, task: str, corpus: Path) -> bool:
    from harness.features import checkpoint_hash
    from harness.records import load_records
    from tasks.corpora.manifest import CorpusInfo

    if not config.records_dir.is_dir():
        return False
    fingerprint = CorpusInfo.read(corpus).fingerprint
    ckpt_hash = checkpoint_hash(candidate.ckpt)
    for record in load_records(config.records_dir):
        upstream = record.get("upstream", {})
        if (
            upstream.get("name") == candidate.upstream
            and upstream.get("ckpt_sha256") == ckpt_hash
            and record.get("task", {}).get("name") == task
            and record.get("corpus", {}).get("fingerprint") == fingerprint
            and record.get("config", {}).get("preset") == config.preset
        ):
            return True
    return False


def _evaluate(config: RunConfig, candidate: Candidate, task: str, corpus: Path) -> None:
    from harness.evaluate import EvaluateConfig, evaluate

    evaluate(
        EvaluateConfig(
            upstream=candidate.upstream,
            ckpt=candidate.ckpt,
            tasks=[task],
            corpus=corpus,
            preset=config.preset,
            device=config.device,
            cache_dir=config.cache_dir,
            records_dir=config.records_dir,
            seed=config.seed,
            max_steps=config.max_steps,
            command=config.command,
        )
    )


def _publish(config: RunConfig) -> None:
    from harness.records import load_records
    from leaderboard.aggregate import build_leaderboard
    from leaderboard.render import to_markdown, write_leaderboard

    records = load_records(config.records_dir) if config.records_dir.is_dir() else []
    if not records:
        logger.error("no records in %s: nothing to put on the leaderboard", config.records_dir)
        return
    tables = build_leaderboard(records)
    write_leaderboard(tables, config.leaderboard_dir, command=config.command)
    print(to_markdown(tables, config.command))  # noqa: T201 - the leaderboard is this command's output
    logger.info("leaderboard written to %s", os.fspath(config.leaderboard_dir))


def _failed(step: str, err: Exception) -> str:
    logger.error("%s failed: %s: %s", step, type(err).__name__, err, exc_info=logger.isEnabledFor(logging.DEBUG))
    return f"{step}: {type(err).__name__}: {err}"
