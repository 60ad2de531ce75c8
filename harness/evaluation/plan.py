"""What an evaluation will store and how long it will extract, decided before any extraction.

Each (task, split) reads one of three kinds of features:

- ``pooled``: each layer's per-utterance mean (utterance-level tasks whose head makes it exact,
  :func:`harness.evaluation.engine.feature_kind`): ``layers x dim x 4`` bytes per utterance;
- ``frames``: every frame cached in float16, ``layers x dim x 2`` bytes per frame, when the entry
  is already cached or its estimate fits what is left of the cache budget;
- ``online``: the frames of an entry that does not fit, made by the upstream inside the training
  loop (:mod:`harness.evaluation.online`) and never stored.

The budget (``--cache-budget GB``) defaults to :data:`DEFAULT_BUDGET_FRACTION` of the free space
of the cache directory's file system; entries are granted in the order the run reads them. A
pooled entry is small but must fit the free space (there is no online path for it), and a budget
above the free space is refused: both before any work, with one line naming the option.

Sizes are estimated from the manifest durations (``duration x 16000 / stride`` frames) and the
upstream's shape; times from its measured real-time factor (batch-1 latency on 10 s of audio,
:mod:`upstreams.cost`), which batched extraction usually beats.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from core.audio import SAMPLE_RATE

logger = logging.getLogger(__name__)

class CacheSpaceError(ValueError):
    """A cache budget or entry that cannot fit: one line naming the option and what to change."""


#: Share of the cache directory's free space a run may fill when ``--cache-budget`` is not given.
DEFAULT_BUDGET_FRACTION = 0.5
GB = 1e9


def free_bytes(directory: str | Path) -> int:
    """Free bytes on the file system that holds ``directory`` (or its nearest existing parent)."""
    path = Path(directory).resolve()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def resolve_budget(cache_dir: str | Path, budget_gb: float | None) -> int:
    """Bytes the run may add to the cache; refuses a budget larger than the free space."""
    free = free_bytes(cache_dir)
    if budget_gb is None:
        return int(DEFAULT_BUDGET_FRACTION * free)
    if budget_gb < 0:
        raise ValueError(f"--cache-budget {budget_gb:g}: give a size in GB, 0 or more (0: never cache frames)")
    if budget_gb * GB > free:
        raise CacheSpaceError(
            f"--cache-budget {budget_gb:g} GB: only {free / GB:.1f} GB are free under {cache_dir}; "
            "give a smaller budget, free some space, or point --cache at a larger disk"
        )
    return int(budget_gb * GB)


def estimated_frames(durations, stride: int) -> int:
    return int(sum(max(1, round(float(d) * SAMPLE_RATE / stride)) for d in durations))


def entry_bytes(kind: str, durations, shape: tuple[int, int, int]) -> int:
    """Estimated bytes of a cache entry of ``kind`` over utterances of these ``durations``."""
    layers, dim, stride = shape
    if kind == "pooled":
        return len(durations) * layers * dim * 4
    if kind == "frames":
        return estimated_frames(durations, stride) * layers * dim * 2
    return 0


@dataclass
class SplitPlan:
    """One (task, split): what it reads, what that adds to the cache, and what it costs to extract."""

    task: str
    split: str
    utterances: int
    hours: float
    kind: str  # pooled / frames / online
    cached: bool  # the entry is in the cache already
    new_bytes: int  # what it adds to the cache (0 when cached or online)
    extract_hours: float | None  # one pass of the upstream over the split (None: unknown speed)

    @property
    def mode(self) -> str:
        if self.kind == "online":
            return "online (frames do not fit the budget)"
        return f"{'cached ' if self.kind == 'frames' else ''}{self.kind}{' (in the cache)' if self.cached else ''}"


class Budget:
    """The bytes left to grant, and the free space a pooled entry must fit."""

    def __init__(self, cache_dir: str | Path, budget_gb: float | None) -> None:
        self.cache_dir = Path(cache_dir)
        self.left = resolve_budget(cache_dir, budget_gb)
        self.free = free_bytes(cache_dir)

    def grant(self, kind: str, cached: bool, estimate: int, where: str) -> str:
        """The kind the entry is read as (``frames`` may become ``online``); charges its bytes."""
        if cached or kind == "online":
            return kind
        if kind == "pooled":
            if estimate > self.free:
                raise CacheSpaceError(
                    f"{where}: its pooled features need about {estimate / GB:.2f} GB and {self.free / GB:.2f} GB are "
                    f"free under {self.cache_dir}; free some space there or give another --cache"
                )
            self.free -= estimate
            return kind
        if estimate > self.left:
            logger.info("%s: about %.1f GB of frames, %.1f GB of cache budget left: extracting online",
                        where, estimate / GB, self.left / GB)  # fmt: skip
            return "online"
        self.left -= estimate
        self.free -= estimate
        return kind


def format_plan(plans: list[SplitPlan], budget: Budget, device: str, rtf: float | None) -> str:
    """The plan as a Markdown table and its totals."""
    from tabulate import tabulate

    rows = [[p.task, p.split, p.utterances, f"{p.hours:.2f}", p.mode, f"{p.new_bytes / GB:.3f}",
             "" if p.extract_hours is None or p.cached else f"{p.extract_hours:.2f}"] for p in plans]  # fmt: skip
    table = tabulate(rows, ["task", "split", "utterances", "audio h", "features", "new cache GB", "extract h"], tablefmt="github")
    new = sum(p.new_bytes for p in plans)
    speed = f"real-time factor {rtf:.4f} on {device}" if rtf else f"unknown speed on {device}"
    lines = [table, "", f"new cache: {new / GB:.3f} GB; budget left after: {budget.left / GB:.1f} GB; free after: "
             f"{budget.free / GB:.1f} GB under {budget.cache_dir}",
             f"extraction estimate from the upstream's {speed} (batch 1; batched extraction is usually faster); "
             "online splits pay it again in every epoch"]  # fmt: skip
    return "\n".join(lines)
