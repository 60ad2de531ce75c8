"""How many transformer layers to keep, read off graph-convexity curves.

A curve holds one score per hidden state, in the s3prl order: by default entry 0 is the input to
the first transformer layer (the feature projection) and entry ``i`` the output of layer ``i``,
so keeping hidden state ``i`` means keeping ``i`` transformer layers. Pass
``includes_input_state=False`` when entry 0 is already the output of layer 1.

Rules (Dorszewski, Tetkova, Hansen 2024: keep the layers up to where convexity peaks or stops
rising, drop the rest, fine-tune):

- ``peak``: the hidden state with the highest score (the first one on ties).
- ``plateau``: the first hidden state ``i`` after which the curve never rises by more than the
  tolerance: ``max(curve[i + 1:]) <= curve[i] + tolerance``, with
  ``tolerance = max(tolerance_points, tolerance_fraction * max(curve))`` (defaults: 1 point or 2 %
  of the peak, whichever is larger). It never keeps more layers than ``peak``, and keeps fewer
  when the rise before the peak is slow.

With several label types (``all``), each curve gets its own choice and the deepest one wins, so
every label type keeps the layers it needs. At least ``min_layers`` layers are always kept.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

RULES = ("peak", "plateau")


@dataclass(frozen=True)
class CurveChoice:
    """The choice made on one label type's curve.

    Attributes:
        label_type (str): e.g. ``"word"``.
        hidden_state (int): chosen index in the curve.
        peak_state (int): index of the curve's maximum.
        chosen_score (float): ``curve[hidden_state]``.
        peak_score (float): ``curve[peak_state]``.
        tolerance (float): plateau tolerance in score points (0 for ``peak``).
    """

    label_type: str
    hidden_state: int
    peak_state: int
    chosen_score: float
    peak_score: float
    tolerance: float


@dataclass(frozen=True)
class LayerSelection:
    """How many layers to keep, and why.

    Attributes:
        rule (str): ``"peak"`` or ``"plateau"``.
        num_layers (int): transformer layers to keep (layers ``1 .. num_layers``).
        hidden_state (int): index in the curves of the last kept hidden state.
        decided_by (str): label type whose choice was the deepest.
        per_label (dict): label type -> ``CurveChoice``.
        reason (str): one sentence for logs and run records.
    """

    rule: str
    num_layers: int
    hidden_state: int
    decided_by: str
    per_label: dict[str, CurveChoice]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def plateau_tolerance(curve: Sequence[float], tolerance_points: float = 1.0, tolerance_fraction: float = 0.02) -> float:
    """``max(tolerance_points, tolerance_fraction * max(curve))``: a rise below this is no rise."""
    return max(tolerance_points, tolerance_fraction * max(curve))


def choose_hidden_state(
    curve: Sequence[float], rule: str = "peak", *, tolerance_points: float = 1.0, tolerance_fraction: float = 0.02
) -> int:
    """Index of the hidden state picked by ``rule`` on one curve (see the module docstring)."""
    values = _check_curve(curve, "curve")
    _check_rule(rule)
    peak = max(range(len(values)), key=lambda i: (values[i], -i))
    if rule == "peak":
        return peak
    tolerance = plateau_tolerance(values, tolerance_points, tolerance_fraction)
    for index in range(len(values)):
        later = values[index + 1 :]
        if not later or max(later) <= values[index] + tolerance:
            return index
    raise AssertionError("unreachable: the last index always qualifies")


def select_layers(
    curves: Mapping[str, Sequence[float]],
    rule: str = "peak",
    *,
    tolerance_points: float = 1.0,
    tolerance_fraction: float = 0.02,
    includes_input_state: bool = True,
    min_layers: int = 1,
) -> LayerSelection:
    """Pick the number of layers to keep from one or more convexity curves.

    Args:
        curves: label type (``"word"``, ``"phone"``, ``"speaker"``) -> score per hidden state.
            Give one entry for a single label type, several for ``all``; all of equal length.
        rule (str): ``"peak"`` or ``"plateau"``.
        tolerance_points, tolerance_fraction (float): plateau tolerance (see the module docstring).
        includes_input_state (bool): entry 0 of each curve is the input to layer 1.
        min_layers (int): keep at least this many layers.

    Returns:
        LayerSelection: the deepest per-label choice, with the reason.
    """
    _check_rule(rule)
    if not curves:
        raise ValueError("select_layers needs at least one curve (label type -> scores per layer)")
    lengths = {name: len(curve) for name, curve in curves.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"all curves must have one score per hidden state; lengths differ: {lengths}")
    if min_layers < 0:
        raise ValueError(f"min_layers must be >= 0, got {min_layers}")
    offset = 0 if includes_input_state else 1
    num_states = next(iter(lengths.values()))
    if min_layers > num_states - 1 + offset:
        raise ValueError(f"min_layers={min_layers} exceeds the {num_states - 1 + offset} layers the curves cover")

    per_label = {}
    for name, curve in curves.items():
        values = _check_curve(curve, f"curve {name!r}")
        chosen = choose_hidden_state(
            values, rule, tolerance_points=tolerance_points, tolerance_fraction=tolerance_fraction
        )
        peak = choose_hidden_state(values, "peak")
        tolerance = plateau_tolerance(values, tolerance_points, tolerance_fraction) if rule == "plateau" else 0.0
        per_label[name] = CurveChoice(name, chosen, peak, values[chosen], values[peak], tolerance)

    decided_by = max(per_label, key=lambda name: per_label[name].hidden_state)
    deciding = per_label[decided_by]
    raised = deciding.hidden_state + offset < min_layers
    num_layers = max(deciding.hidden_state + offset, min_layers)
    hidden_state = num_layers - offset
    reason = _reason(rule, deciding, len(per_label), num_layers, raised)
    return LayerSelection(rule, num_layers, hidden_state, decided_by, per_label, reason)


def _reason(rule: str, choice: CurveChoice, num_curves: int, num_layers: int, raised: bool) -> str:
    if rule == "peak":
        text = f"{choice.label_type} convexity peaks at hidden state {choice.hidden_state} ({choice.peak_score:.2f})"
    else:
        text = (
            f"{choice.label_type} convexity stops rising by more than {choice.tolerance:.2f} points after hidden "
            f"state {choice.hidden_state} ({choice.chosen_score:.2f}; peak {choice.peak_score:.2f} at "
            f"{choice.peak_state})"
        )
    if num_curves > 1:
        text += f", the deepest choice over {num_curves} label types"
    if raised:
        text += f"; raised to the minimum of {num_layers} layers"
    return f"keep {num_layers} layers: {text}"


def _check_rule(rule: str) -> None:
    if rule not in RULES:
        raise ValueError(f"unknown layer-selection rule {rule!r}; choose one of {', '.join(RULES)}")


def _check_curve(curve: Sequence[float], name: str) -> list[float]:
    values = [float(v) for v in curve]
    if not values:
        raise ValueError(f"{name} is empty; it needs one score per hidden state")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{name} has NaN or infinite scores: {values}")
    return values
