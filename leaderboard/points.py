"""A table's rows as points of size against score, and the Pareto frontier among them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

COSTS = ("params", "macs_per_second")


@dataclass(frozen=True, eq=False)
class Point:
    """One row of a table: what it is, what it costs, its SUPERB-style score and that score on
    every shared bootstrap resample of the table (None without per-utterance records)."""

    label: str  # the row label (leaderboard.labels.row_label)
    kind: str  # fbank, teacher, uncompressed or compressed (leaderboard.labels)
    method: str | None  # the compression method; None for uncompressed rows
    params: float | None  # parameters (count)
    macs_per_second: float | None
    score: float | None
    interval: tuple[float, float] | None = None  # the score's 95 % interval
    samples: np.ndarray | None = None  # [resamples]
    tag: str | None = None  # a short name beside its marker in a plot (``5/6``, ``s 0.75``)

    def cost(self, name: str) -> float | None:
        """``params`` or ``macs_per_second``."""
        return getattr(self, name)


def pareto_frontier(points: Sequence[Point], cost: str = "params") -> list[Point]:
    """The points no other beats: none has a lower-or-equal ``cost`` and a higher score. Points
    without that cost or a score are left out; the frontier is returned cheapest first."""
    known = [p for p in points if p.cost(cost) is not None and p.score is not None]
    frontier = [p for p in known if not any(q.cost(cost) <= p.cost(cost) and q.score > p.score for q in known)]
    return sorted(frontier, key=lambda p: (p.cost(cost), -p.score))
