"""Two views of a table beyond its rows: the parameter budgets (Markdown, HTML, CSV) and the
Pareto plot of score against parameters and against MACs (a PNG, Agg backend)."""

from __future__ import annotations

import html
import io
import math
from collections.abc import Sequence
from typing import Any

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tabulate import tabulate

from leaderboard.aggregate import SCORE_COLUMN, CorpusTable
from leaderboard.budgets import TOLERANCE, Budget
from leaderboard.labels import COMPRESSED, FBANK_KIND, TEACHER, UNCOMPRESSED
from leaderboard.points import Point, pareto_frontier

BUDGET_NOTE = (
    f"Compressed rows whose parameter counts are within {TOLERANCE * 100:g} % of each other share a budget. Where a "
    "budget holds two methods or more, the best-scoring row of the leading method is compared with the best-"
    "scoring row of each other method: the difference of their SUPERB-style scores with its 95 % interval from the "
    "paired bootstrap of the table (the same utterance and seed draws). The budget names its best method only "
    "when every such interval lies above 0."
)
NO_COUNTS_NOTE = "No score here has an interval: these records keep no per-utterance counts, which a comparison needs."
BUDGET_HEADERS = ["budget (M params)", "row", "method", "params (M)", f"{SCORE_COLUMN} [95 %]"]
PARETO_ALT = ("SUPERB-style score against parameters and against MACs: one line per method, the teacher and FBANK "
              "as single points, 95 % intervals as error bars, the Pareto frontier dashed and ringed")  # fmt: skip


# ------------------------------------------------------------------------------ budgets


def _millions(value: float) -> str:
    value /= 1e6
    return f"{value:.2f}" if abs(value) >= 1 or value == 0 else f"{value:.3g}"


def _score_text(point: Point) -> str:
    if point.score is None:
        return "missing"
    low, high = point.interval or (math.nan, math.nan)
    bounds = f" [{low:.1f}, {high:.1f}]" if not (math.isnan(low) or math.isnan(high)) else ""
    return f"{point.score:.1f}{bounds}"


def _budget_rows(table: CorpusTable) -> list[list[str]]:
    return [[_millions(b.params), p.label, str(p.method), _millions(p.params), _score_text(p)]
            for b in table.budgets for p in b.points]  # fmt: skip


def verdict_line(budget: Budget) -> str:
    """``4.51 M (convexity, dphubert): convexity − dphubert +12.3 [+3.1, +20.5]; best: convexity``."""
    parts = []
    for c in budget.comparisons:
        spread = f" [{c.interval[0]:+.1f}, {c.interval[1]:+.1f}]" if c.interval else ""
        parts.append(f"{c.leader.method} − {c.other.method} {c.difference:+.1f}{spread}")
    return f"{_millions(budget.params)} M ({', '.join(budget.methods)}): " + "; ".join([*parts, budget.verdict])


def _needs_counts_note(table: CorpusTable) -> bool:
    return bool(table.budgets) and all(p.samples is None for b in table.budgets for p in b.points)


def budgets_markdown(table: CorpusTable) -> list[str]:
    """The budget section of one table, as Markdown lines."""
    out = ["### Parameter budgets", "", BUDGET_NOTE, ""]
    if not table.budgets:
        return [*out, "No compressed row with a parameter count.", ""]
    align = ["right", "left", "left", "right", "right"]
    out += [tabulate(_budget_rows(table), headers=BUDGET_HEADERS, tablefmt="pipe", colalign=align, disable_numparse=True), ""]
    out += [f"- {verdict_line(b)}" for b in table.budgets]
    return out + (["", NO_COUNTS_NOTE] if _needs_counts_note(table) else []) + [""]


def budgets_html(table: CorpusTable) -> str:
    """The budget section of one table, as HTML."""
    parts = ["<h3>Parameter budgets</h3>", f"<p>{html.escape(BUDGET_NOTE)}</p>"]
    if not table.budgets:
        return "\n".join([*parts, "<p>No compressed row with a parameter count.</p>"])
    head = "".join(f"<th>{html.escape(h)}</th>" for h in BUDGET_HEADERS)
    kinds = ['<td class="num">', "<td>", "<td>", '<td class="num">', '<td class="num">']
    body = "\n".join("<tr>" + "".join(f"{kind}{html.escape(cell)}</td>" for kind, cell in zip(kinds, cells, strict=True))
                      + "</tr>" for cells in _budget_rows(table))  # fmt: skip
    parts.append(f'<table class="budgets"><thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table>')
    parts.append('<ul class="verdicts">' + "".join(f"<li>{html.escape(verdict_line(b))}</li>" for b in table.budgets) + "</ul>")
    if _needs_counts_note(table):
        parts.append(f"<p>{html.escape(NO_COUNTS_NOTE)}</p>")
    return "\n".join(parts)


def budgets_csv(tables: Sequence[CorpusTable]) -> str:
    """One line per compressed row of every budget: its score, the difference the budget's leader
    has over it (``leader − row``, paired bootstrap 95 % interval), whether that one difference is
    significant (its interval above 0), and the budget's verdict (which names a best method only when
    the leader is significantly ahead of every other method there)."""
    lines: list[dict[str, Any]] = []
    for table in tables:
        for budget in table.budgets:
            against = {id(c.other): c for c in budget.comparisons}
            for point in budget.points:
                c = against.get(id(point))
                low, high = point.interval or (None, None)
                lines.append({
                    "corpus": table.corpus, "corpus_fingerprint": table.fingerprint, "preset": table.preset,
                    "budget (M params)": budget.params / 1e6, "row": point.label, "method": point.method,
                    "params (M)": point.params / 1e6, "SUPERB score": point.score,
                    "SUPERB score 95% low": low, "SUPERB score 95% high": high,
                    "compared with": c.leader.label if c else None, "leader − row": c.difference if c else None,
                    "leader − row 95% low": c.interval[0] if c and c.interval else None,
                    "leader − row 95% high": c.interval[1] if c and c.interval else None,
                    "leader − row significant": (("yes" if c.significant else "no") if c and c.interval else None),
                    "budget verdict": budget.verdict,
                })  # fmt: skip
    if not lines:
        return ""
    return pd.DataFrame(lines).to_csv(index=False, float_format="%.6g", lineterminator="\n")


# ------------------------------------------------------------------------------ Pareto plot

PANELS = (("params", 1e6, "parameters (M)"), ("macs_per_second", 1e9, "MACs (G per s of audio)"))
SINGLE_POINTS = ((TEACHER, "*", 14, "teacher"), (UNCOMPRESSED, "D", 7, "uncompressed"), (FBANK_KIND, "X", 9, "FBANK (zero point)"))


def _errors(points: Sequence[Point]) -> list[list[float]]:
    below, above = [], []
    for p in points:
        low, high = p.interval or (p.score, p.score)
        below.append(0.0 if math.isnan(low) else max(p.score - low, 0.0))
        above.append(0.0 if math.isnan(high) else max(high - p.score, 0.0))
    return [below, above]


def _off_scale(points: Sequence[Point]) -> list[Point]:
    """The FBANK point, when drawing it would squeeze every other row into the top of the panel:
    the others' scores (with intervals) span less than a third of the range down to FBANK's. It
    then leaves the axes and a note at the panel's foot gives its score and cost."""
    fbank = [p for p in points if p.kind == FBANK_KIND]
    others = [p for p in points if p.kind != FBANK_KIND]
    if not fbank or not others:
        return []
    lows = [min(p.score, p.interval[0]) if p.interval and not math.isnan(p.interval[0]) else p.score for p in others]
    highs = [max(p.score, p.interval[1]) if p.interval and not math.isnan(p.interval[1]) else p.score for p in others]
    bottom, top = min(lows), max(highs)
    floor = max(p.score for p in fbank)
    if floor >= bottom or top - bottom >= (top - floor) / 3:
        return []
    return fbank


def _pareto_panel(axes: Any, table: CorpusTable, cost: str, scale: float, name: str) -> None:
    points = [p for p in table.points if p.score is not None and p.cost(cost) is not None]
    if not points:
        axes.text(0.5, 0.5, f"No row has both a score and {name} yet (see the notes).", ha="center", va="center",
                  wrap=True, transform=axes.transAxes)  # fmt: skip
        axes.set_axis_off()
        return
    methods = sorted({str(p.method) for p in points if p.kind == COMPRESSED})
    for method in methods:
        line = sorted((p for p in points if p.kind == COMPRESSED and str(p.method) == method), key=lambda p: p.cost(cost))
        x, y = [p.cost(cost) / scale for p in line], [p.score for p in line]
        axes.errorbar(x, y, yerr=_errors(line), marker="o", markersize=5, capsize=3, linewidth=1.2, label=method)
        for p, xi, yi in zip(line, x, y, strict=True):
            if p.tag:
                axes.annotate(p.tag, (xi, yi), fontsize=7, xytext=(4, 4), textcoords="offset points")
    off_scale = _off_scale(points)
    hidden = {id(p) for p in off_scale}
    for kind, marker, size, label in SINGLE_POINTS:
        group = [p for p in points if p.kind == kind and id(p) not in hidden]
        if group:
            axes.errorbar([p.cost(cost) / scale for p in group], [p.score for p in group], yerr=_errors(group),
                          fmt=marker, markersize=size, color="0.15", capsize=3, label=label)  # fmt: skip
    frontier = [p for p in pareto_frontier(points, cost) if id(p) not in hidden]
    x, y = [p.cost(cost) / scale for p in frontier], [p.score for p in frontier]
    axes.step(x, y, where="post", linestyle="--", color="0.4", linewidth=1, label="Pareto frontier", zorder=1)
    axes.scatter(x, y, s=220, facecolors="none", edgecolors="0.4", linewidths=1, zorder=1)
    axes.margins(x=0.08, y=0.1)
    if off_scale:
        axes.text(0.01, 0.01, "off the scale, below: " + "; ".join(
            f"{p.label.split(' (')[0]} (score {p.score:.0f} at {p.cost(cost) / scale:.3g})" for p in off_scale),
            fontsize=7, color="0.3", transform=axes.transAxes)  # fmt: skip
    axes.set_xlabel(name)
    axes.set_ylabel("SUPERB-style score")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small", loc="lower right")
    axes.set_title(f"Score vs {name.split(' (')[0]}: {table.title}", fontsize="medium")


def plot_pareto(tables: Sequence[CorpusTable]) -> bytes:
    """PNG: per table, two panels (score against parameters, against MACs per second of audio)."""
    figure = Figure(figsize=(12.0, 4.6 * max(len(tables), 1)), dpi=100)
    FigureCanvasAgg(figure)
    grid = figure.subplots(max(len(tables), 1), 2, squeeze=False)
    for table, row in zip(tables, grid, strict=False):
        for axes, (cost, scale, name) in zip(row, PANELS, strict=True):
            _pareto_panel(axes, table, cost, scale, name)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()
