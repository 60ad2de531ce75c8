"""Sizes as sparsities: the fraction of the teacher's parameters a compression removes.

The one range check of a sparsity, for every place that takes one (``harness run --sparsity``, its
config, each targeting method's options), so they refuse the same values with the same words.
"""

from __future__ import annotations

from collections.abc import Iterable

#: Decimals a matched target sparsity is rounded to: 1e-4 of a teacher is far inside 1 % of any budget.
TARGET_DECIMALS = 4


def check_sparsity(values: float | Iterable[float], option: str = "--sparsity") -> None:
    """Raise ValueError unless every value lies strictly between 0 (remove nothing) and 1 (remove all)."""
    for value in [values] if isinstance(values, int | float) else list(values):
        if not 0.0 < value < 1.0:
            raise ValueError(f"{option} must lie in (0, 1), got {value:g}: give the fraction of the teacher's "
                             "parameters to remove, e.g. 0.75")  # fmt: skip
