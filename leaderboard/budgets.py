"""The budget view: compressed rows grouped by parameter count, and which method is best at each.

Compressed rows whose parameter counts lie within 1 % of each other (relative to the smaller)
share a budget (:func:`cluster_by_params`). Where a budget holds rows of two or more methods, the
best-scoring row of each method stands for it, and the leading method is compared with each other
one by the paired bootstrap of the table (:mod:`leaderboard.intervals`): the difference of their
SUPERB-style scores on the same utterance and seed draws. The budget names its best method only
when every such difference has a 95 % interval above 0; otherwise there is no significant difference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from leaderboard.intervals import interval
from leaderboard.labels import COMPRESSED
from leaderboard.points import Point

TOLERANCE = 0.01  # relative to the smaller parameter count
NO_DIFFERENCE = "no significant difference"
NEEDS_COUNTS = "no comparison: it needs per-utterance records (the bootstrap of the table)"
NO_SCORES = "no comparison: fewer than two methods have a score here"
ONE_METHOD = "one method: no comparison"


def cluster_by_params(values: Sequence[float], tolerance: float = TOLERANCE) -> list[list[int]]:
    """Indices of ``values`` grouped into budgets, smallest first: a budget opens at the smallest
    value ``v`` not yet placed and holds every value up to ``v * (1 + tolerance)``, so any two
    values of one budget are within ``tolerance`` of each other, relative to the smaller."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    groups: list[list[int]] = []
    for index in order:
        if groups and values[index] <= values[groups[-1][0]] * (1.0 + tolerance):
            groups[-1].append(index)
        else:
            groups.append([index])
    return groups


@dataclass(frozen=True)
class Comparison:
    """The leading method's row minus another method's row at one budget."""

    leader: Point
    other: Point
    difference: float  # leader.score - other.score
    interval: tuple[float, float] | None  # paired bootstrap 95 % interval; None without samples

    @property
    def significant(self) -> bool:
        return self.interval is not None and self.interval[0] > 0.0


@dataclass
class Budget:
    """The compressed rows of one parameter budget and, with two methods or more, the verdict."""

    params: float  # the smallest parameter count in it
    points: list[Point]  # by parameter count
    comparisons: list[Comparison] = field(default_factory=list)
    verdict: str = ONE_METHOD  # or "best: METHOD", NO_DIFFERENCE, NEEDS_COUNTS, NO_SCORES

    @property
    def methods(self) -> list[str]:
        return sorted({str(p.method) for p in self.points})


def build_budgets(points: Sequence[Point], tolerance: float = TOLERANCE) -> list[Budget]:
    """The budgets of the compressed rows with a parameter count, smallest first (see the module docstring)."""
    sized = [p for p in points if p.kind == COMPRESSED and p.params is not None]
    budgets = []
    for group in cluster_by_params([p.params for p in sized], tolerance):
        members = sorted((sized[i] for i in group), key=lambda p: (p.params, p.label))
        budget = Budget(params=members[0].params, points=members)
        if len(budget.methods) > 1:
            budget.comparisons, budget.verdict = compare_methods(members)
        budgets.append(budget)
    return budgets


def compare_methods(points: Sequence[Point]) -> tuple[list[Comparison], str]:
    """The leading method's best row against each other method's best row, and the verdict."""
    best: dict[str, Point] = {}
    for point in points:
        method = str(point.method)
        if point.score is not None and (method not in best or point.score > best[method].score):
            best[method] = point
    if len(best) < 2:
        return [], NO_SCORES
    leader, *others = sorted(best.values(), key=lambda p: -p.score)
    comparisons = []
    for other in others:
        paired = leader.samples is not None and other.samples is not None
        spread = interval(leader.samples - other.samples) if paired else None
        comparisons.append(Comparison(leader, other, leader.score - other.score, spread))
    if any(c.interval is None for c in comparisons):
        return comparisons, NEEDS_COUNTS
    if all(c.significant for c in comparisons):
        return comparisons, f"best: {leader.method}"
    return comparisons, NO_DIFFERENCE
