"""PNG of graph convexity per hidden state, one line per label type, kept layers marked."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from core.files import atomic_path
from harness.compression.convexity.selection import LayerSelection


def plot_convexity(
    curves: Mapping[str, Sequence[float]],
    path: str | os.PathLike,
    *,
    selection: LayerSelection | None = None,
    title: str = "Graph convexity per layer",
    dpi: int = 120,
    other: tuple[str, Mapping[str, Sequence[float]]] | None = None,
) -> Path:
    """Draw the curves and write them as a PNG (atomically).

    Args:
        curves: label type -> convexity (0..100) per hidden state, entry 0 = input to layer 1.
        path: the PNG to write; parent folders are created.
        selection (LayerSelection or None): when given, the kept hidden states are shaded, the cut
            is a dashed line and each label type's own choice is circled.
        title (str): figure title.
        dpi (int): resolution.
        other: ``(name, curves)`` by the average the rule does not use (``pairs``, nnconvexity's, or
            ``classes``), drawn thin and dashed in each label type's colour.

    Returns:
        Path: ``path``.
    """
    if not curves:
        raise ValueError("plot_convexity needs at least one curve (label type -> scores per layer)")
    figure = Figure(figsize=(7, 4), dpi=dpi)
    FigureCanvasAgg(figure)  # Agg rendering, no pyplot state or display needed
    axes = figure.add_subplot()
    num_states = max(len(curve) for curve in curves.values())
    if selection is not None:
        axes.axvspan(
            -0.5, selection.hidden_state + 0.5, color="0.5", alpha=0.15,
            label=f"kept: {selection.num_layers} layers ({selection.rule})",
        )
        axes.axvline(selection.hidden_state + 0.5, color="0.3", linestyle="--", linewidth=1)
    for name, curve in curves.items():
        (line,) = axes.plot(range(len(curve)), list(curve), marker="o", markersize=3, label=name)
        if other is not None and name in other[1]:
            axes.plot(range(len(other[1][name])), list(other[1][name]), linestyle="--", linewidth=0.9,
                      color=line.get_color(), label=f"{name} (mean over {other[0]})")  # fmt: skip
        choice = selection.per_label.get(name) if selection is not None else None
        if choice is not None:
            axes.plot(
                [choice.hidden_state], [choice.chosen_score], marker="o", markersize=10,
                markerfacecolor="none", markeredgecolor=line.get_color(), markeredgewidth=1.5,
            )
    axes.set_xlabel("hidden state (0 = input to layer 1)")
    axes.set_ylabel("graph convexity (%)")
    axes.set_xlim(-0.5, num_states - 0.5)
    axes.set_xticks(range(num_states))
    axes.set_ylim(0, 102)
    axes.grid(alpha=0.3)
    axes.set_title(title)
    axes.legend(loc="best", fontsize="small")
    figure.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return path
