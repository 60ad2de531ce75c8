"""The settings of one ``harness evaluate`` run, torch-free: ``harness evaluate``'s options take
their defaults from :class:`EvaluateConfig`, and ``harness run`` builds one per evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.paths import CACHE_DIR, RECORDS_DIR
from harness.devices import DEFAULT_DEVICE
from tasks.schedules import DEFAULT_SCHEDULE

#: ``--utterance-features``: ``auto`` trains utterance-level heads on pooled statistics where that is
#: exact (:func:`harness.evaluation.engine.feature_kind`); ``frames`` always reads frames.
UTTERANCE_FEATURES = ("auto", "frames")


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
    seed: int = 0  # the heads' seed, unless head_seeds is given
    head_seeds: list[int] | None = None  # one evaluation per seed and task, on one session; None: [seed]
    max_steps: int | None = None  # caps the preset's steps (and its validation interval)
    extract_dtype: str = "auto"  # bfloat16 on a GPU that has it, float32 elsewhere (harness.evaluation.engine.extraction_dtype)
    extract_batch_seconds: float = 64.0
    cache_budget_gb: float | None = None  # None: harness.evaluation.plan.DEFAULT_BUDGET_FRACTION of the free space
    utterance_features: str = "auto"  # "frames": utterance-level heads read frames, not pooled statistics
    command: str | None = None  # the command line, kept in the records
    trust_checkpoint: bool = False  # let s3prl's own entries open a --ckpt that does not load safely
    ckpt_sha256: str | None = None  # --ckpt's checkpoint_hash, when the caller has computed it (harness run)
    features_from: str | None = None  # a compact checkpoint --ckpt is the first layers of: its cached features serve

    def evaluation_seeds(self) -> list[int]:
        """The head seeds each task is trained with."""
        return list(self.head_seeds) if self.head_seeds else [self.seed]
