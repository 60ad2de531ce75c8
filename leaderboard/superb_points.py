"""SUPERB's own per-task points, with the SUPERB leaderboard's fixed reference values.

The SUPERB leaderboard scores a task as ``1000 * (v - baseline) / (topline - baseline)``, where the
baseline is FBANK's published figure and the topline the published state of the art, both fixed,
and a lower-is-better metric (PER, WER, EER, DER, CER) is first turned into ``100 - value``. These
points let a row on a real corpus prepared with SUPERB's splits be compared with published SUPERB
numbers. They are not the table's SUPERB-style score, which is relative to the table's own teacher
and FBANK rows (on the embedded benchmark there is no published state of the art).

Torch-free; the values are those of the leaderboard's source (``../shared/REFERENCE.md`` section 6).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Metrics SUPERB turns into ``100 - value`` before the ratio.
LOWER_IS_BETTER = frozenset({"per", "wer", "eer", "der", "cer"})


@dataclass(frozen=True)
class SuperbReference:
    """One task's fixed reference values, raw (as published, before turning)."""

    metric: str
    baseline: float  # FBANK
    topline: float  # the state of the art the leaderboard fixes

    def points(self, value: float) -> float:
        """SUPERB points of a raw ``value`` of :attr:`metric`."""
        if self.metric in LOWER_IS_BETTER:
            value, baseline, topline = 100 - value, 100 - self.baseline, 100 - self.topline
        else:
            baseline, topline = self.baseline, self.topline
        return 1000 * (value - baseline) / (topline - baseline)


#: Our task names -> SUPERB's reference values (SUPERB's IC is our ``slu``).
SUPERB_REFERENCES = {
    "pr": SuperbReference("per", 82.01, 3.53),
    "asr": SuperbReference("wer", 23.18, 3.62),
    "ks": SuperbReference("accuracy", 41.3826674, 96.66),
    "slu": SuperbReference("accuracy", 9.649354219, 98.76),
    "sid": SuperbReference("accuracy", 20.058174, 90.30),
}

POINTS_NOTE = (
    "SUPERB points: the SUPERB leaderboard's per-task points, 1000 × (v − FBANK) / (SOTA − FBANK) with its "
    "fixed published FBANK and state-of-the-art values (lower-is-better metrics as 100 − value), so rows "
    "compare with published SUPERB numbers; the SUPERB-style score column is relative to this table's "
    "teacher and FBANK instead."
)


def superb_points(task: str, value: float) -> float:
    """SUPERB points of ``value`` (the task's main metric, in percent) on ``task``."""
    if task not in SUPERB_REFERENCES:
        raise KeyError(f"SUPERB has no fixed reference values for task {task!r}; known: {', '.join(SUPERB_REFERENCES)}")
    return SUPERB_REFERENCES[task].points(value)


def points_interval(task: str, low: float, high: float) -> tuple[float, float]:
    """The points of a metric interval (points are affine in the metric; a lower-is-better one flips)."""
    ends = sorted((superb_points(task, low), superb_points(task, high)))
    return ends[0], ends[1]
