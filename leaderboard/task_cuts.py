"""The per-task convexity cuts of a table: each task evaluated on the teacher cut where the convexity
of its own label type peaks (``harness run``, ``OUT/convexity-cuts/TASK``), against the teacher.

A cut's records carry ``compression.cut_for`` (the task) and ``compression.labels`` (its label
type). They are not rows of the main table (each has one task, so no score); this view shows per
task the kept depth, size and cost, the metric with its 95 % interval, the teacher's, and their
paired difference (the same bootstrap draws over test utterances and head seeds as the table's,
:mod:`leaderboard.intervals`), "not significant" when its interval holds 0.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tabulate import tabulate

from core.records import Record

NOTE = (
    "Each task evaluated on its own convexity cut of the teacher: the depth where the convexity of the "
    "task's label type peaks (SID: speaker, PR: phone, ASR, SLU, KS: word), against the uncompressed teacher; "
    "difference = cut − teacher with its paired 95 % interval."
)
HEADERS = ["task", "label", "kept layers", "params (M)", "MACs (G/s)", "cut", "teacher", "cut − teacher"]


@dataclass
class TaskCut:
    task: str
    label: str
    kept_layers: int | None
    teacher_layers: int | None
    params: float | None
    macs_per_second: float | None
    value: float
    teacher: float | None
    interval: tuple[float, float] | None = None
    teacher_interval: tuple[float, float] | None = None
    difference: tuple[float, float] | None = None  # the interval of cut - teacher
    seeds: int = 1

    @property
    def significant(self) -> bool | None:
        return None if self.difference is None else not (self.difference[0] <= 0.0 <= self.difference[1])


def is_cut(record: Record) -> bool:
    return bool(record.compression.get("cut_for"))


def build_task_cuts(cut_records: Sequence[Record], teacher_rows: Mapping[str, Mapping | None]) -> list[TaskCut]:
    """One :class:`TaskCut` per task with cut records; ``teacher_rows``: task -> the table's reference
    row (its ``_by_task`` records), or None."""
    from leaderboard import intervals as ci

    by_task: dict[str, list[Record]] = {}
    for record in cut_records:
        by_task.setdefault(record.task.name, []).append(record)
    cuts = []
    for task, found in sorted(by_task.items()):
        found = sorted(found, key=lambda r: (r.seed is None, r.seed))
        first = found[0]
        teacher = (teacher_rows.get(task) or {}).get("_by_task", {}).get(task, [])
        cut = TaskCut(
            task=task, label=",".join(first.compression.get("labels") or []), kept_layers=first.compression.get("kept_layers"),
            teacher_layers=first.compression.get("teacher_layers"), params=first.cost("params"),
            macs_per_second=first.macs_per_second(), value=sum(r.main_score for r in found) / len(found),
            teacher=sum(r.main_score for r in teacher) / len(teacher) if teacher else None, seeds=len(found),
        )  # fmt: skip
        if all(r.per_utterance for r in [*found, *teacher]) and teacher:
            try:  # the teacher first: its utterance order is the draws'
                samples = ci.paired_samples({"teacher": [r.per_utterance for r in teacher], "cut": [r.per_utterance for r in found]})
            except ValueError:
                samples = None
            if samples is not None:
                mine, theirs = samples["cut"], samples["teacher"]
                cut.interval, cut.teacher_interval = ci.interval(mine), ci.interval(theirs)
                cut.difference = ci.interval(mine - theirs)
        cuts.append(cut)
    return cuts


def _with_interval(value: float | None, interval: tuple[float, float] | None, sign: str = "") -> str:
    if value is None:
        return "missing"
    text = f"{value:{sign}.2f}"
    return f"{text} [{interval[0]:{sign}.2f}, {interval[1]:{sign}.2f}]" if interval else text


def rows(cuts: Sequence[TaskCut]) -> list[list[str]]:
    out = []
    for cut in cuts:
        difference = None if cut.teacher is None else cut.value - cut.teacher
        verdict = "" if cut.significant is None else (", significant" if cut.significant else ", not significant")
        depth = f"{cut.kept_layers}/{cut.teacher_layers}" if cut.kept_layers else ""
        out.append([cut.task, cut.label, depth, "" if cut.params is None else f"{cut.params / 1e6:.2f}",
                    "" if cut.macs_per_second is None else f"{cut.macs_per_second / 1e9:.2f}",
                    _with_interval(cut.value, cut.interval), _with_interval(cut.teacher, cut.teacher_interval),
                    _with_interval(difference, cut.difference, "+") + verdict])  # fmt: skip
    return out


def cuts_markdown(cuts: Sequence[TaskCut]) -> list[str]:
    if not cuts:
        return []
    table = tabulate(rows(cuts), headers=HEADERS, tablefmt="pipe", disable_numparse=True)
    return ["### Per-task convexity cuts", "", NOTE, "", table, ""]


def cuts_html(cuts: Sequence[TaskCut]) -> str:
    if not cuts:
        return ""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADERS)
    body = "\n".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells) + "</tr>" for cells in rows(cuts))
    return (f"<h3>Per-task convexity cuts</h3>\n<p>{html.escape(NOTE)}</p>\n"
            f'<table class="cuts"><thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table>')  # fmt: skip
