"""Stand-ins for graph-convexity results, for tests that construct the curves a rule should follow."""

from __future__ import annotations

from harness.compression.convexity.graph import ConvexityResult


def fake_result(score: float, pair_score: float | None = None) -> ConvexityResult:
    """A layer's result with these scores (the mean over pairs defaults to the mean over classes)."""
    return ConvexityResult(score=score, class_scores={}, num_pairs={}, pair_score=score if pair_score is None else pair_score)
