"""The settings of one ``harness evaluate`` run, torch-free: ``harness evaluate``'s options take
their defaults from :class:`EvaluateConfig`, and ``harness run`` builds one per evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.paths import CACHE_DIR, RECORDS_DIR
from harness.devices import DEFAULT_DEVICE
from tasks.schedules import DEFAULT_SCHEDULE


@dataclass
class EvaluateConfig:
    """One ``harness evaluate`` run. See ``harness evaluate --help`` for each option."""

    upstream: str
    tasks: list[str]
    corpus: Path  # a prepared corpus directory (corpus.json + manifests/)
    ckpt: str | None = None
    preset: str = DEFAULT_SCHEDULE
    lr_sweep: bool = False
    device: str = DEFAULT_DEVICE
    cache_dir: Path = CACHE_DIR
    records_dir: Path = RECORDS_DIR
    seed: int = 0
    max_steps: int | None = None  # caps the preset's steps (and its validation interval)
    extract_dtype: str = "float32"
    extract_batch_seconds: float = 64.0
    command: str | None = None  # the command line, kept in the records
    trust_checkpoint: bool = False  # let s3prl's own entries open a --ckpt that does not load safely
