"""The registry of compression methods behind ``harness compress --method NAME`` and ``harness run``.

Each entry is a :class:`Method`: its compress function (``"module:attr"``, imported on first use),
its options module (torch-free: ``add_arguments(group)`` and ``check_options(preset, options,
teacher)``), the schedules it has, how it reaches a target size, and what else the pipeline does
with it (a scores cache, per-task cuts, a convexity average). ``harness run`` reads these
declarations and never names a method.

Sizes are sparsities (the fraction of the teacher's parameters removed). A method reaches sizes in
one of two ways, and says which:

- by a target (``target_option``): it is given any sparsity and lands on it (DPHuBERT: within one
  FFN unit under the budget);
- by a sweep (``sweep_option``, ``sweep_sparsities``): its sizes are outcomes from a fixed set it
  can enumerate from the teacher alone (convexity: one per depth 1 .. L-1), and one run with the
  sweep option on writes a compact checkpoint for each.

``harness run --budgets matched`` sweeps every sweeping method and gives every targeting method
each swept size (plus its own default), so rows of different methods share parameter budgets.
``harness run`` without ``--methods`` runs the methods declared ``in_default_run`` (those that fit
the main command's time budget on a CPU).

A compress function writes either one compact checkpoint in ``out`` or, in a sweep, one per size in
subfolders of ``out`` listed by ``out/checkpoints.json`` (written last); see :func:`finished_checkpoints`.

A compress function is ``compress(teacher, out, *, corpus, preset, device, **options) -> Path``; it
writes a compact checkpoint (``upstreams.checkpoint`` format) to ``out`` and returns it. The
checkpoint's metadata holds ``compression = {"method", "teacher", "sparsity", "dir", ...}``, which
the run records and the leaderboard read.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core.paths import CHECKPOINTS_FILE
from core.registry import Registry
from harness.compression.convexity.options import AVERAGES, DEFAULT_AVERAGE, LABEL_TYPES
from harness.compression.dphubert.options import DPHuBERTConfig
from harness.compression.sparsity import TARGET_DECIMALS


def _resolve(entry: str) -> Callable:
    """The function named ``"module:attr"``, imported on first use."""
    module, attr = entry.split(":", 1)
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class Method:
    """One compression method.

    Args:
        name: registry name (``--method NAME``).
        entry: ``"module:attr"`` of its compress function.
        options: the torch-free module of its options: ``add_arguments(group) -> destinations`` and
            ``check_options(preset, options, teacher=None)``, which raises what ``compress`` would
            refuse of its options before any work (``teacher``: the teacher's EncoderConfig when known).
        schedules: the ``--preset`` names it has (``demo``, ``paper``).
        target_option: the option by which it is given a target size (``sparsity``: the fraction of
            the teacher's parameters to remove), or None when the size is an outcome (convexity
            chooses a depth from its curves).
        default_target: the target used when none is given.
        sweep_option: the option (set to ``"all"``) that makes the method write a checkpoint for
            every size it can make, or None.
        sweep: ``"module:attr"`` of ``(teacher spec) -> sparsities`` of those sizes, computed from
            the teacher without compressing it.
        teacher_check: ``"module:attr"`` of ``(preset, options, teacher EncoderConfig)``, what the
            options module cannot check without torch, called when the teacher is known; or None.
        help: one line for ``--help``.
        in_default_run: whether ``harness run`` runs it when no ``--methods`` are given.
        scores_cache_option: the option by which it is given a folder for the teacher's convexity
            scores, kept across its compressions (``harness run`` passes ``CACHE/convexity``), or None.
        average_option: the option by which it is told how convexity averages (``harness run
            --average``), or None for a method that scores no convexity; ``averages`` are the values
            it takes and ``default_average`` the one it uses when told none (a run under another
            average writes its checkpoints in their own folders).
        task_cuts: ``"module:attr"`` of ``(teacher, finished compression folder, {task: label type},
            cuts folder) -> {task: compact checkpoint or None}``: after the method, one cut of the
            teacher per task from that task's own label curve (None: the curve keeps every layer),
            or None for a method that makes no per-task cuts; ``cut_label_types`` are the label
            types such a cut can follow (``harness run --cut-labels``).
    """

    name: str
    entry: str
    options: str
    schedules: tuple[str, ...] = ("demo", "paper")
    target_option: str | None = None
    default_target: float | None = None
    sweep_option: str | None = None
    sweep: str | None = None
    teacher_check: str | None = None
    help: str = ""
    in_default_run: bool = True
    scores_cache_option: str | None = None
    average_option: str | None = None
    averages: tuple[str, ...] = ()
    default_average: str | None = None
    task_cuts: str | None = None
    cut_label_types: tuple[str, ...] = ()

    def check(self, preset: str, options: dict, teacher=None) -> None:
        """Refuse, before any work, a schedule or options that ``compress`` would refuse
        (``teacher``: the teacher's EncoderConfig when known)."""
        if preset not in self.schedules:
            raise ValueError(f"--method {self.name} has no schedule {preset!r}; choose one of {', '.join(self.schedules)}")
        importlib.import_module(self.options).check_options(preset, options, teacher)
        if self.teacher_check and teacher is not None:
            _resolve(self.teacher_check)(preset, options, teacher)

    def add_arguments(self, group: argparse._ActionsContainer) -> list[str]:
        """Add the method's options to ``group``; returns their destinations."""
        return importlib.import_module(self.options).add_arguments(group)

    @property
    def compress(self) -> Callable:
        return _resolve(self.entry)

    @property
    def sweep_sparsities(self) -> Callable[[str], list[float]] | None:
        return _resolve(self.sweep) if self.sweep else None

    @property
    def write_task_cuts(self) -> Callable | None:
        return _resolve(self.task_cuts) if self.task_cuts else None

    def jobs(self, targets: list[float] | None, sweep: bool = False, average: str | None = None) -> list[tuple[str, dict]]:
        """``(output folder name, options)`` per compression this method runs: one per target size
        for a method that takes one (``targets`` None: its default), else one (with ``sweep``, the
        sweep that writes every size it can make). With an ``average`` other than its default, each
        goes to a folder of its own (``NAME-pairs``): a checkpoint chosen under one average is never
        reused for the other."""
        if self.target_option is None:
            jobs = [(self.name, {self.sweep_option: "all"} if sweep and self.sweep_option else {})]
        else:
            jobs = [(f"{self.name}-{t:g}", {self.target_option: t}) for t in (targets or [self.default_target])]
        if self.average_option and average and average != self.default_average:
            jobs = [(f"{folder}-{average}", {**options, self.average_option: average}) for folder, options in jobs]
        return jobs


def finished_checkpoints(out: str | os.PathLike) -> list[Path] | None:
    """The compact checkpoints a finished compression left in ``out`` (``out`` itself, or the
    subfolders its ``checkpoints.json`` lists); None when it has not finished."""
    from upstreams.checkpoint import is_complete_checkpoint

    out = Path(out)
    if is_complete_checkpoint(out):
        return [out]
    listing = out / CHECKPOINTS_FILE
    if not listing.is_file():
        return None
    folders = [out / name for name in json.loads(listing.read_text(encoding="utf-8"))["checkpoints"]]
    return folders if all(is_complete_checkpoint(folder) for folder in folders) else None


def matched_targets(methods: list[Method], teacher: str, extra: list[float] | None = None) -> list[float]:
    """The sparsities every targeting method runs at under ``--budgets matched``: each size the
    sweeping methods make, plus ``extra`` (``--sparsity``) or the targeting methods' defaults."""
    swept = {round(s, TARGET_DECIMALS) for m in methods if m.sweep_sparsities for s in m.sweep_sparsities(teacher)}
    own = extra or [m.default_target for m in methods if m.target_option and m.default_target is not None]
    return sorted(swept | set(own))


def default_run_methods() -> list[str]:
    """The methods ``harness run`` runs when no ``--methods`` are given (``Method.in_default_run``)."""
    return [name for name in METHODS.names() if METHODS.get(name).in_default_run]


#: What the convexity-scoring methods declare alike: how they average, and the scores cache option.
_CONVEXITY_AVERAGES = {"average_option": "average", "averages": AVERAGES, "default_average": DEFAULT_AVERAGE,
                       "scores_cache_option": "scores_cache"}  # fmt: skip

METHODS: Registry[Method] = Registry("compression method")
METHODS.register("convexity", Method(
    "convexity", "harness.compression.convexity.method:compress_convexity", "harness.compression.convexity.options",
    sweep_option="depths", sweep="harness.compression.convexity.method:depth_sparsities",
    task_cuts="harness.compression.convexity.method:write_task_cuts", cut_label_types=LABEL_TYPES,
    help="layer pruning: keep the layers up to where graph convexity of the labels peaks (or plateaus)",
    **_CONVEXITY_AVERAGES,
))  # fmt: skip
METHODS.register("dphubert", Method(
    "dphubert", "harness.compression.dphubert.method:compress_dphubert", "harness.compression.dphubert.options",
    target_option="sparsity", default_target=DPHuBERTConfig.sparsity,
    help="joint distillation and structured pruning (heads, FFN units, conv channels) to a target sparsity",
))  # fmt: skip
METHODS.register("distill", Method(
    "distill", "harness.compression.distill:compress_distill", "harness.compression.distill_options",
    target_option="sparsity", default_target=DPHuBERTConfig.sparsity, in_default_run=False,
    teacher_check="harness.compression.distill:check_student_size",
    help="distillation into a fixed student of the target size (DistilHuBERT's recipe), on DPHuBERT's schedule",
))  # fmt: skip
METHODS.register("convexity_dphubert", Method(
    "convexity_dphubert", "harness.compression.convexity_dphubert:compress_convexity_dphubert",
    "harness.compression.convexity_dphubert_options", target_option="sparsity", default_target=DPHuBERTConfig.sparsity,
    in_default_run=False,
    help="convexity chooses the depth, DPHuBERT prunes inside the kept layers to a sparsity of the whole teacher",
    **_CONVEXITY_AVERAGES,
))  # fmt: skip
