"""The convexity fine-tuning study's table: per task, the teacher cut where its own label's convexity
says and the full teacher, both fine-tuned end to end on the same schedule, seeds and batches
(``harness.finetune``), set beside the convexity paper's claims.

Intervals are the leaderboard's (:mod:`leaderboard.intervals`): a percentile bootstrap over the test
utterances and the seeds, the same draws for the cut and the full model, so the difference
``cut − full`` has a paired interval. Time ratios are per seed, each from one process that trained
the cut and then the full model with the same threads; the table gives their median and range.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from tabulate import tabulate

from leaderboard.intervals import Counts, interval, paired_samples

#: Dorszewski, Tětková, Hansen 2024 (../shared/REFERENCE.md section 2), in their words' figures.
PAPER_CLAIMS = {
    "params": "up to about 70 % fewer parameters",
    "train": "20-50 % less training time",
    "inference": "25-60 % less inference time",
    "accuracy": "no loss of accuracy, sometimes gains",
}
MODELS = ("cut", "full")  # the report's "pruned" is the cut


@dataclass
class TaskStudy:
    """One task of the study: its cut, and the two fine-tuned models' figures over the seeds."""

    task: str
    label: str  # the label type whose curve chose the cut
    kept_layers: int
    teacher_layers: int
    metric: str = ""
    higher_is_better: bool = True
    seeds: list[int] = field(default_factory=list)
    params: dict[str, int] = field(default_factory=dict)
    value: dict[str, float] = field(default_factory=dict)  # mean over seeds of the test metric
    spread: dict[str, tuple[float, float]] = field(default_factory=dict)  # 95 % interval
    difference: float | None = None  # cut − full, metric points
    difference_interval: tuple[float, float] | None = None
    train_s: dict[str, list[float]] = field(default_factory=dict)  # per seed
    train_ratio: list[float] = field(default_factory=list)  # cut / full, per seed
    inference_ratio: list[float] = field(default_factory=list)
    inference_s_per_audio_s: dict[str, list[float]] = field(default_factory=dict)
    best_steps: dict[str, list[int]] = field(default_factory=dict)
    steps: int = 0  # the schedule's optimizer steps

    @property
    def has_cut(self) -> bool:
        return self.kept_layers < self.teacher_layers

    @property
    def accuracy_verdict(self) -> str:
        """Whether the cut lost against the full model, from the paired interval."""
        if self.difference_interval is None:
            return "no comparison"
        low, high = self.difference_interval
        if low <= 0.0 <= high:
            return "no significant difference"
        cut_better = (low > 0.0) == self.higher_is_better
        return "the cut is significantly better" if cut_better else "the cut is significantly worse"


def build_study(cuts: Mapping[str, Mapping[str, Any]], reports: Sequence[Mapping[str, Any]]) -> list[TaskStudy]:
    """The study's rows, in the order of ``cuts`` (task -> ``{"label", "kept_layers", "teacher_layers"}``),
    from the ``finetune-TASK.json`` reports (one per task and seed)."""
    by_task: dict[str, list[Mapping[str, Any]]] = {}
    for report in reports:
        by_task.setdefault(report["task"]["name"], []).append(report)
    rows = []
    for task, cut in cuts.items():
        row = TaskStudy(task, cut["label"], int(cut["kept_layers"]), int(cut["teacher_layers"]))
        found = sorted(by_task.get(task, []), key=lambda r: r["seeds"]["train"])
        if row.has_cut and found:
            _fill(row, found)
        rows.append(row)
    return rows


def _fill(row: TaskStudy, reports: list[Mapping[str, Any]]) -> None:
    row.metric = reports[0]["task"]["main_metric"]
    row.higher_is_better = bool(reports[0]["task"]["higher_is_better"])
    row.seeds = [int(r["seeds"]["train"]) for r in reports]
    row.steps = int(reports[0]["schedule"]["steps"])
    models = {name: [r["models"]["pruned" if name == "cut" else "full"] for r in reports] for name in MODELS}
    samples = paired_samples({name: [m["per_utterance"] for m in runs] for name, runs in models.items()})
    for name in MODELS:
        row.value[name] = float(np.mean([Counts.from_record(m["per_utterance"]).value() for m in models[name]]))
        row.spread[name] = interval(samples[name])
        row.params[name] = int(models[name][0]["params"])
        row.train_s[name] = [float(m["training"]["train_s"]) for m in models[name]]
        row.inference_s_per_audio_s[name] = [float(m["inference"]["inference_s_per_audio_s"]) for m in models[name]]
        row.best_steps[name] = [int(m["best_step"]) for m in models[name]]
    row.difference = row.value["cut"] - row.value["full"]
    row.difference_interval = interval(samples["cut"] - samples["full"])
    row.train_ratio = [c / f for c, f in zip(row.train_s["cut"], row.train_s["full"], strict=True)]
    row.inference_ratio = [c / f for c, f in zip(row.inference_s_per_audio_s["cut"], row.inference_s_per_audio_s["full"], strict=True)]


# ------------------------------------------------------------------------------------ formats
def _less(ratios: Sequence[float]) -> str:
    """``31 % less [24, 37]``: one minus the median ratio (cut / full), and its range over the seeds;
    ``4 % more [-1, 9]`` when the cut took longer (the range is of "more" then)."""
    if not ratios:
        return ""
    less = 100.0 * (1.0 - np.asarray(ratios))
    median = float(np.median(less))
    if median < 0:
        return f"{-median:.0f} % more [{-less.max():.0f}, {-less.min():.0f}]"
    return f"{median:.0f} % less [{less.min():.0f}, {less.max():.0f}]"


def _figure(value: float, spread: tuple[float, float]) -> str:
    return f"{value:.2f} [{spread[0]:.2f}, {spread[1]:.2f}]"


HEADERS = ["task", "cut (label: layers)", "metric", "cut", "full", "cut − full", "accuracy",
           "params", "training time", "inference time", "seeds", "steps"]  # fmt: skip


def table_rows(rows: Sequence[TaskStudy]) -> list[list[str]]:
    out = []
    for r in rows:
        depth = f"{r.label}: {r.kept_layers}/{r.teacher_layers}"
        if not r.has_cut:
            out.append([r.task, depth, "", "", "", "", f"the {r.label} curve keeps every layer: no cut to fine-tune",
                        "", "", "", "", ""])  # fmt: skip
            continue
        if not r.seeds:
            out.append([r.task, depth, "", "", "", "", "not run yet", "", "", "", "", ""])
            continue
        arrow = "↑" if r.higher_is_better else "↓"
        low, high = r.difference_interval
        fewer = 100.0 * (1 - r.params["cut"] / r.params["full"])
        out.append([
            r.task, depth, f"{r.metric} {arrow}", _figure(r.value["cut"], r.spread["cut"]), _figure(r.value["full"], r.spread["full"]),
            f"{r.difference:+.2f} [{low:+.2f}, {high:+.2f}]", r.accuracy_verdict,
            f"{r.params['cut'] / 1e6:.2f} / {r.params['full'] / 1e6:.2f} M ({fewer:.0f} % fewer)",
            _less(r.train_ratio), _less(r.inference_ratio), str(len(r.seeds)), str(r.steps),
        ])  # fmt: skip
    return out


def claims_lines(rows: Sequence[TaskStudy]) -> list[str]:
    """The paper's claims, each with what this study measured, task by task."""
    done = [r for r in rows if r.has_cut and r.seeds]
    if not done:
        return ["No task has a fine-tuned cut: nothing to set beside the paper's claims."]
    lines = []
    for key, measured in (
        ("params", lambda r: f"{100 * (1 - r.params['cut'] / r.params['full']):.0f} % fewer"),
        ("train", lambda r: _less(r.train_ratio)),
        ("inference", lambda r: _less(r.inference_ratio)),
        ("accuracy", lambda r: f"{r.difference:+.2f} [{r.difference_interval[0]:+.2f}, {r.difference_interval[1]:+.2f}] {r.metric}, {r.accuracy_verdict}"),
    ):  # fmt: skip
        lines.append(f"- paper: {PAPER_CLAIMS[key]}; here: " + "; ".join(f"{r.task} {measured(r)}" for r in done))
    return lines


def to_markdown(rows: Sequence[TaskStudy]) -> str:
    table = tabulate(table_rows(rows), headers=HEADERS, tablefmt="pipe", disable_numparse=True)
    return table + "\n\n" + "\n".join(claims_lines(rows)) + "\n"


def to_csv(rows: Sequence[TaskStudy]) -> str:
    lines = []
    for r in rows:
        line: dict[str, Any] = {"task": r.task, "label": r.label, "kept_layers": r.kept_layers, "teacher_layers": r.teacher_layers,
                                "metric": r.metric or None, "seeds": len(r.seeds), "steps": r.steps or None}  # fmt: skip
        for name in MODELS:
            spread = r.spread.get(name, (None, None))
            line |= {f"{name} {r.metric}" if r.metric else f"{name} metric": r.value.get(name),
                     f"{name} 95% low": spread[0], f"{name} 95% high": spread[1], f"{name} params": r.params.get(name),
                     f"{name} train_s (median)": float(np.median(r.train_s[name])) if name in r.train_s else None,
                     f"{name} inference_s per audio s (median)": float(np.median(r.inference_s_per_audio_s[name])) if name in r.train_s else None}  # fmt: skip
        low, high = r.difference_interval or (None, None)
        line |= {"cut − full": r.difference, "cut − full 95% low": low, "cut − full 95% high": high,
                 "accuracy verdict": r.accuracy_verdict if r.seeds else None,
                 "train time ratio (median)": float(np.median(r.train_ratio)) if r.train_ratio else None,
                 "inference time ratio (median)": float(np.median(r.inference_ratio)) if r.inference_ratio else None}  # fmt: skip
        lines.append(line)
    buffer = io.StringIO()
    pd.DataFrame(lines).to_csv(buffer, index=False, float_format="%.6g", lineterminator="\n")
    return buffer.getvalue()


def plot_curves(reports: Sequence[Mapping[str, Any]], path) -> None:
    """Validation curves: per task, the main metric on valid against the step, the cut (solid) and
    the full model (dashed), one line per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from core.files import atomic_path

    tasks = sorted({r["task"]["name"] for r in reports})
    if not tasks:
        return
    figure, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4), squeeze=False)
    for axis, task in zip(axes[0], tasks, strict=True):
        for index, report in enumerate(r for r in reports if r["task"]["name"] == task):
            metric = report["task"]["main_metric"]
            for name, style, colour in (("pruned", "-", "tab:blue"), ("full", "--", "tab:orange")):
                history = report["models"][name]["history"]
                label = f"{'cut' if name == 'pruned' else 'full'} ({report['models'][name]['num_layers']} layers)"
                axis.plot([h["step"] for h in history], [h[f"valid_{metric}"] for h in history], style, color=colour,
                          alpha=0.8, label=label if index == 0 else None)  # fmt: skip
        axis.set_title(task)
        axis.set_xlabel("step")
        axis.set_ylabel(f"valid {metric}")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    plt.close(figure)
