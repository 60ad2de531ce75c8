"""The convexity fine-tuning study's table: per task, the teacher cut where its own label's convexity
says and the full teacher, both fine-tuned end to end on the same schedule, seeds and batches
(``harness.finetune``), set beside the convexity paper's claims.

Intervals are the leaderboard's (:mod:`leaderboard.intervals`): a percentile bootstrap over the test
utterances and the seeds, the same draws for the cut and the full model, so the difference
``cut − full`` has a paired interval. Time ratios are per seed, each from one process that trained
the cut and then the full model with the same threads; the table gives their median and range.

Reports are read through :func:`load_report` (a :class:`Report`, validated: a report of an older
version that lacks a key the table reads is a ``ValueError`` naming the file and the key).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
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


# ------------------------------------------------------------------------------------ reports
@dataclass(frozen=True)
class Validation:
    """One validation of a fine-tuning run: its step, and the metrics on valid (``valid_`` dropped)."""

    step: int
    metrics: Mapping[str, float]


@dataclass(frozen=True, eq=False)  # compared by identity: the counts are arrays
class ModelReport:
    """One model of a report, the cut (the report's ``"pruned"``) or the full teacher, tested at its best step."""

    num_layers: int
    params: int  # the encoder's, without the head
    best_step: int  # the step best on valid, the weights tested
    per_utterance: Counts  # per test utterance, the counts whose summed ratio is the main metric
    train_s: float  # the model work of the training steps (harness.finetune's "Timings")
    inference_s_per_audio_s: float  # the test forward passes, per second of test audio
    history: tuple[Validation, ...]


@dataclass(frozen=True, eq=False)
class Report:
    """A ``finetune-TASK.json`` (:func:`harness.finetune.finetune_pair`): the fields the study reads."""

    origin: str  # where it was read from (its file), for errors
    task: str
    main_metric: str
    higher_is_better: bool
    seed: int  # the fine-tuning seed: head initialisation and batch order
    steps: int  # the schedule's optimizer steps
    schedule: Mapping[str, Any]  # as written (FinetuneConfig's fields), for study.json
    device: Mapping[str, Any]  # the machine the pair was trained on, for study.json
    cut: ModelReport
    full: ModelReport

    def model(self, name: str) -> ModelReport:
        """The model ``name`` of :data:`MODELS`."""
        return {"cut": self.cut, "full": self.full}[name]


_KINDS: dict[str, Callable[[Any], bool]] = {
    "an integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "a number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "a string": lambda v: isinstance(v, str),
    "true or false": lambda v: isinstance(v, bool),
    "an object": lambda v: isinstance(v, Mapping),
    "a list": lambda v: isinstance(v, list),
}


def _error(origin: str, problem: str) -> ValueError:
    return ValueError(f"{origin}: {problem}, so it is no fine-tuning report this version can read (one written by an "
                      "older harness.finetune?); delete that file and run the study again to fine-tune its pair anew "
                      "(a rerun skips only the pairs whose report exists)")  # fmt: skip


def _read(origin: str, data: Any, key: str, kind: str, within: str = "") -> Any:
    """``data["a"]["b"]`` for the ``key`` "a.b", checked to be ``kind`` (one of :data:`_KINDS`);
    ``within`` is where ``data`` sits in the report, for the error."""
    value, place = data, within
    for part in key.split("."):
        if not isinstance(value, Mapping):
            raise _error(origin, f"{f'key {place!r}' if place else 'the report'} is {_shown(value)}, not an object")
        place = f"{place}.{part}" if place else part
        if part not in value:
            raise _error(origin, f"key {place!r} is missing")
        value = value[part]
    if not _KINDS[kind](value):
        raise _error(origin, f"key {place!r} is {_shown(value)}, not {kind}")
    return value


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _model_report(origin: str, data: Mapping[str, Any], at: str, main_metric: str) -> ModelReport:
    """The model at ``at`` (``models.pruned`` or ``models.full``) of the report ``data``."""
    if not _read(origin, data, f"{at}.per_utterance.ids", "a list"):
        raise _error(origin, f"key '{at}.per_utterance.ids' is empty (no test utterance)")
    for side in ("numerator", "denominator"):
        if not all(_KINDS["a number"](v) for v in _read(origin, data, f"{at}.per_utterance.{side}", "a list")):
            raise _error(origin, f"key '{at}.per_utterance.{side}' holds a value that is not a number")
    try:
        counts = Counts.from_record(_read(origin, data, f"{at}.per_utterance", "an object"))
    except ValueError as error:
        raise _error(origin, f"key '{at}.per_utterance': {error}") from None
    history = []
    for index, entry in enumerate(_read(origin, data, f"{at}.history", "a list")):
        place = f"{at}.history[{index}]"
        _read(origin, entry, f"valid_{main_metric}", "a number", place)
        metrics = {k.removeprefix("valid_"): float(_read(origin, entry, k, "a number", place)) for k in entry if k.startswith("valid_")}
        history.append(Validation(_read(origin, entry, "step", "an integer", place), metrics))
    return ModelReport(
        num_layers=_read(origin, data, f"{at}.num_layers", "an integer"), params=_read(origin, data, f"{at}.params", "an integer"),
        best_step=_read(origin, data, f"{at}.best_step", "an integer"), per_utterance=counts,
        train_s=float(_read(origin, data, f"{at}.training.train_s", "a number")),
        inference_s_per_audio_s=float(_read(origin, data, f"{at}.inference.inference_s_per_audio_s", "a number")),
        history=tuple(history),
    )  # fmt: skip


def parse_report(data: Any, origin: str = "a report") -> Report:
    """The report ``data`` (a ``finetune-TASK.json`` parsed), validated as :func:`load_report` does;
    ``origin`` names it in errors."""
    main_metric = _read(origin, data, "task.main_metric", "a string")
    return Report(
        origin=origin, task=_read(origin, data, "task.name", "a string"), main_metric=main_metric,
        higher_is_better=_read(origin, data, "task.higher_is_better", "true or false"),
        seed=_read(origin, data, "seeds.train", "an integer"), steps=_read(origin, data, "schedule.steps", "an integer"),
        schedule=dict(_read(origin, data, "schedule", "an object")), device=dict(_read(origin, data, "device", "an object")),
        cut=_model_report(origin, data, "models.pruned", main_metric), full=_model_report(origin, data, "models.full", main_metric),
    )  # fmt: skip


def load_report(path: str | os.PathLike) -> Report:
    """The fine-tuning report at ``path`` (``finetune-TASK.json``), validated: a key the study reads that
    is missing or of another type (a report of an older version) raises ``ValueError`` naming the file
    and the key, and what to do. The one reader of the format: the table and the study go through it."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError as error:  # not JSON, or not UTF-8
        raise _error(str(path), f"cannot be read as JSON ({error})") from None
    return parse_report(data, str(path))


def _as_reports(reports: Sequence[Report | Mapping[str, Any]]) -> list[Report]:
    """``reports``, each mapping (a report's parsed JSON) through :func:`parse_report`."""
    return [r if isinstance(r, Report) else parse_report(r, f"reports[{i}]") for i, r in enumerate(reports)]


def _counts_record(counts: Counts) -> dict[str, Any]:
    """``counts`` as the ``per_utterance`` section :func:`leaderboard.intervals.paired_samples` takes."""
    return {"ids": list(counts.ids), "numerator": counts.numerator, "denominator": counts.denominator}


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


def build_study(cuts: Mapping[str, Mapping[str, Any]], reports: Sequence[Report | Mapping[str, Any]]) -> list[TaskStudy]:
    """The study's rows, in the order of ``cuts`` (task -> ``{"label", "kept_layers", "teacher_layers"}``),
    from the ``finetune-TASK.json`` reports (one per task and seed; :func:`load_report`, or their parsed
    JSON, which goes through :func:`parse_report`)."""
    by_task: dict[str, list[Report]] = {}
    for report in _as_reports(reports):
        by_task.setdefault(report.task, []).append(report)
    rows = []
    for task, cut in cuts.items():
        row = TaskStudy(task, cut["label"], int(cut["kept_layers"]), int(cut["teacher_layers"]))
        found = sorted(by_task.get(task, []), key=lambda r: r.seed)
        if row.has_cut and found:
            _fill(row, found)
        rows.append(row)
    return rows


def _fill(row: TaskStudy, reports: list[Report]) -> None:
    row.metric = reports[0].main_metric
    row.higher_is_better = reports[0].higher_is_better
    row.seeds = [r.seed for r in reports]
    row.steps = reports[0].steps
    models = {name: [r.model(name) for r in reports] for name in MODELS}
    samples = paired_samples({name: [_counts_record(m.per_utterance) for m in runs] for name, runs in models.items()})
    for name in MODELS:
        row.value[name] = float(np.mean([m.per_utterance.value() for m in models[name]]))
        row.spread[name] = interval(samples[name])
        row.params[name] = models[name][0].params
        row.train_s[name] = [m.train_s for m in models[name]]
        row.inference_s_per_audio_s[name] = [m.inference_s_per_audio_s for m in models[name]]
        row.best_steps[name] = [m.best_step for m in models[name]]
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


def plot_curves(reports: Sequence[Report | Mapping[str, Any]], path) -> None:
    """Validation curves: per task, the main metric on valid against the step, the cut (solid) and
    the full model (dashed), one line per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from core.files import atomic_path

    reports = _as_reports(reports)
    tasks = sorted({r.task for r in reports})
    if not tasks:
        return
    figure, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4), squeeze=False)
    for axis, task in zip(axes[0], tasks, strict=True):
        for index, report in enumerate(r for r in reports if r.task == task):
            metric = report.main_metric
            for name, style, colour in (("cut", "-", "tab:blue"), ("full", "--", "tab:orange")):
                model = report.model(name)
                axis.plot([h.step for h in model.history], [h.metrics[metric] for h in model.history], style, color=colour,
                          alpha=0.8, label=f"{name} ({model.num_layers} layers)" if index == 0 else None)  # fmt: skip
        axis.set_title(task)
        axis.set_xlabel("step")
        axis.set_ylabel(f"valid {metric}")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    plt.close(figure)
