"""95 % confidence intervals of leaderboard figures: a percentile bootstrap over test utterances and
head seeds, paired across the rows of a table.

Every record keeps, per test utterance, the two counts whose summed ratio is its main metric
(``per_utterance``: errors and reference length for WER/PER, correct and 1 for accuracies), so a
corpus-level rate is recomputed exactly on each resample: ``100 * sum(numerator) / sum(denominator)``
over the resampled utterances, never an average of per-utterance rates.

One resample draws the test utterances with replacement (the same draw for every row of a table,
so that rows are compared on the same utterances: a paired bootstrap) and, for each row, its head
seeds with replacement (the seed draw is shared by rows with the same seeds). A row's figure on the
resample is the mean over the drawn seeds. The SUPERB-style score and the difference of two rows
are computed on each resample from those figures, so their intervals come from the same draws.
With one seed only the test-set noise is covered; the table says how many seeds each row has.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

RESAMPLES = 1000
LEVEL = 0.95
SEED = 0  # the bootstrap's own seed: a table is the same every time it is built


@dataclass(frozen=True)
class Counts:
    """Per-utterance counts of one record: ``metric = 100 * sum(numerator) / sum(denominator)``."""

    ids: tuple[str, ...]
    numerator: np.ndarray  # [utterances]
    denominator: np.ndarray  # [utterances]

    @classmethod
    def from_record(cls, per_utterance: Mapping | None) -> Counts | None:
        """The counts of a record's ``per_utterance`` section; None when it has none (older records)."""
        if not per_utterance:
            return None
        ids = tuple(str(i) for i in per_utterance["ids"])
        numerator = np.asarray(per_utterance["numerator"], dtype=np.float64)
        denominator = np.asarray(per_utterance["denominator"], dtype=np.float64)
        if not len(ids) == len(numerator) == len(denominator):
            raise ValueError("per_utterance: ids, numerator and denominator differ in length")
        return cls(ids, numerator, denominator)

    def aligned(self, ids: Sequence[str]) -> Counts:
        """The counts in the order of ``ids`` (which must be exactly this record's utterances)."""
        if tuple(ids) == self.ids:
            return self
        if set(ids) != set(self.ids) or len(ids) != len(self.ids):
            raise ValueError("records of one table were tested on different utterances")
        order = {utterance: i for i, utterance in enumerate(self.ids)}
        index = np.array([order[i] for i in ids])
        return Counts(tuple(ids), self.numerator[index], self.denominator[index])

    def value(self) -> float:
        return 100.0 * float(self.numerator.sum()) / float(self.denominator.sum())


def interval(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of bootstrap ``samples`` (NaNs, from empty resamples, are left out)."""
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return (float("nan"), float("nan"))
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    return (float(low), float(high))


class Resampler:
    """The shared draws of one table: how often each test utterance is drawn, ``[resamples,
    utterances]``, and, per number of seeds, seed indices ``[resamples, seeds]``."""

    def __init__(self, utterances: int, resamples: int = RESAMPLES, seed: int = SEED) -> None:
        rng = np.random.default_rng(seed)
        self.resamples = resamples
        drawn = rng.integers(0, utterances, size=(resamples, utterances))
        self.weights = np.zeros((resamples, utterances))
        np.add.at(self.weights, (np.arange(resamples)[:, None], drawn), 1.0)
        self._seeds: dict[int, np.ndarray] = {}

    def seed_draws(self, count: int) -> np.ndarray:
        if count not in self._seeds:
            self._seeds[count] = np.random.default_rng([SEED, count]).integers(0, count, size=(self.resamples, count))
        return self._seeds[count]

    def samples(self, per_seed: Sequence[Counts]) -> np.ndarray:
        """A row's figure on every resample ``[resamples]``: the mean over drawn seeds of the rate
        recomputed on the drawn utterances."""
        numerators = np.stack([c.numerator for c in per_seed]) @ self.weights.T  # [seeds, B]
        denominators = np.stack([c.denominator for c in per_seed]) @ self.weights.T
        with np.errstate(invalid="ignore", divide="ignore"):
            rates = 100.0 * numerators / denominators  # [seeds, B]
        draws = self.seed_draws(len(per_seed))  # [B, seeds]
        return rates[draws, np.arange(self.resamples)[:, None]].mean(axis=1)


def paired_samples(sides: Mapping[str, Sequence[Mapping | None]]) -> dict[str, np.ndarray] | None:
    """Per side (its per-seed ``per_utterance`` sections), its figure on every resample of one shared
    draw (:class:`Resampler`), so that differences between sides are paired; aligned on the first
    side's utterance order. None when a section is missing; ``ValueError`` when the sides were
    tested on different utterances."""
    counts = {name: [Counts.from_record(section) for section in side] for name, side in sides.items()}
    if any(c is None for side in counts.values() for c in side):
        return None
    ids = next(iter(counts.values()))[0].ids
    resampler = Resampler(len(ids))
    return {name: resampler.samples([c.aligned(ids) for c in side]) for name, side in counts.items()}


def score_samples(
    rows: Mapping[str, np.ndarray], fbank: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray],
    tasks: Sequence[str], scale: float,
) -> np.ndarray | None:
    """The SUPERB-style score on every resample, from per-task samples of the row, FBANK and the
    reference; None when any of them lacks samples for a task, or there is no task to score over."""
    if not tasks:
        return None
    ratios = []
    for task in tasks:
        if task not in rows or task not in fbank or task not in reference:
            return None
        with np.errstate(invalid="ignore", divide="ignore"):
            ratios.append((rows[task] - fbank[task]) / (reference[task] - fbank[task]))
    return scale / len(tasks) * np.sum(ratios, axis=0)
