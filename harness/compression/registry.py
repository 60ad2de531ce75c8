"""The registry of compression methods behind ``harness compress --method NAME`` and ``harness run``.

Each entry is a :class:`Method`: its compress function (``"module:attr"``, imported on first use),
its command-line options (a torch-free ``add_arguments(group)``), the schedules it has, and how it
reaches a target size. ``harness run`` reads these declarations and never names a method.

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


@dataclass(frozen=True)
class Method:
    """One compression method.

    Args:
        name: registry name (``--method NAME``).
        entry: ``"module:attr"`` of its compress function.
        add_arguments: adds its own options to an argument group; returns their destinations.
        schedules: the ``--preset`` names it has (``demo``, ``paper``).
        target_option: the option by which it is given a target size (``sparsity``: the fraction of
            the teacher's parameters to remove), or None when the size is an outcome (convexity
            chooses a depth from its curves).
        default_target: the target used when none is given.
        sweep_option: the option (set to ``"all"``) that makes the method write a checkpoint for
            every size it can make, or None.
        sweep_sparsities: ``(teacher spec) -> sparsities`` of those sizes, computed from the teacher
            without compressing it.
        help: one line for ``--help``.
        check_options: ``(preset, options, teacher config or None)``: raises what ``compress`` would
            refuse of its options, before any work (torch-free).
        in_default_run: whether ``harness run`` runs it when no ``--methods`` are given.
        scores_cache_option: the option by which it is given a folder for the teacher's convexity
            scores, kept across its compressions (``harness run`` passes ``CACHE/convexity``), or None.
        average_option: the option by which it is told how convexity averages (over classes or over
            pairs; ``harness run --average``), or None for a method that scores no convexity.
    """

    name: str
    entry: str
    add_arguments: Callable[[argparse._ActionsContainer], list[str]]
    schedules: tuple[str, ...] = ("demo", "paper")
    target_option: str | None = None
    default_target: float | None = None
    sweep_option: str | None = None
    sweep_sparsities: Callable[[str], list[float]] | None = None
    help: str = ""
    check_options: Callable[[str, dict, object], None] | None = None
    in_default_run: bool = True
    scores_cache_option: str | None = None
    average_option: str | None = None

    def check(self, preset: str, options: dict, teacher=None) -> None:
        """Refuse, before any work, a schedule or options that ``compress`` would refuse
        (``teacher``: the teacher's EncoderConfig when known)."""
        if preset not in self.schedules:
            raise ValueError(f"--method {self.name} has no schedule {preset!r}; choose one of {', '.join(self.schedules)}")
        if self.check_options is not None:
            self.check_options(preset, options, teacher)

    @property
    def compress(self) -> Callable:
        module, attr = self.entry.split(":", 1)
        return getattr(importlib.import_module(module), attr)

    def jobs(self, targets: list[float] | None, sweep: bool = False) -> list[tuple[str, dict]]:
        """``(output folder name, options)`` per compression this method runs: one per target size
        for a method that takes one (``targets`` None: its default), else one (with ``sweep``, the
        sweep that writes every size it can make)."""
        if self.target_option is None:
            return [(self.name, {self.sweep_option: "all"} if sweep and self.sweep_option else {})]
        return [(f"{self.name}-{t:g}", {self.target_option: t}) for t in (targets or [self.default_target])]


#: Decimals a matched target sparsity is rounded to: 1e-4 of a teacher is far inside 1 % of any budget.
TARGET_DECIMALS = 4


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


def _convexity_arguments(group: argparse._ActionsContainer) -> list[str]:
    from harness.compression.convexity.options import add_arguments

    return add_arguments(group)


def _dphubert_arguments(group: argparse._ActionsContainer) -> list[str]:
    from harness.compression.dphubert.options import add_arguments

    return add_arguments(group)


def _convexity_check(preset: str, options: dict, teacher=None) -> None:
    from harness.compression.convexity.options import check_options

    check_options(preset, options, teacher)


def _dphubert_check(preset: str, options: dict, teacher=None) -> None:
    from harness.compression.dphubert.options import check_options

    check_options(preset, options, teacher)


def _distill_check(preset: str, options: dict, teacher=None) -> None:
    from harness.compression.distill_options import DEFAULT_LOSS, check_options

    config = check_options(preset, options)
    if teacher is not None:
        from harness.compression.distill import check_budget

        check_budget(teacher, config, options.get("loss") or DEFAULT_LOSS)


def _convexity_dphubert_check(preset: str, options: dict, teacher=None) -> None:
    from harness.compression.convexity_dphubert_options import check_options

    check_options(preset, options, teacher)


def _distill_arguments(group: argparse._ActionsContainer) -> list[str]:
    from harness.compression.distill_options import add_arguments

    return add_arguments(group)


def _convexity_dphubert_arguments(group: argparse._ActionsContainer) -> list[str]:
    from harness.compression.convexity_dphubert_options import add_arguments

    return add_arguments(group)


def _convexity_depth_sparsities(teacher: str) -> list[float]:
    from harness.compression.convexity.method import depth_sparsities

    return depth_sparsities(teacher)


def _dphubert_default_sparsity() -> float:
    from harness.compression.dphubert.options import DPHuBERTConfig

    return DPHuBERTConfig.sparsity


METHODS: Registry[Method] = Registry("compression method")
METHODS.register("convexity", Method(
    "convexity", "harness.compression.convexity.method:compress_convexity", _convexity_arguments,
    sweep_option="depths", sweep_sparsities=_convexity_depth_sparsities, check_options=_convexity_check,
    scores_cache_option="scores_cache", average_option="average",
    help="layer pruning: keep the layers up to where graph convexity of the labels peaks (or plateaus)",
))  # fmt: skip
METHODS.register("dphubert", Method(
    "dphubert", "harness.compression.dphubert.method:compress_dphubert", _dphubert_arguments,
    target_option="sparsity", default_target=_dphubert_default_sparsity(), check_options=_dphubert_check,
    help="joint distillation and structured pruning (heads, FFN units, conv channels) to a target sparsity",
))  # fmt: skip
METHODS.register("distill", Method(
    "distill", "harness.compression.distill:compress_distill", _distill_arguments,
    target_option="sparsity", default_target=_dphubert_default_sparsity(), in_default_run=False,
    check_options=_distill_check,
    help="distillation into a fixed student of the target size (DistilHuBERT's recipe), on DPHuBERT's schedule",
))  # fmt: skip
METHODS.register("convexity_dphubert", Method(
    "convexity_dphubert", "harness.compression.convexity_dphubert:compress_convexity_dphubert",
    _convexity_dphubert_arguments, target_option="sparsity", default_target=_dphubert_default_sparsity(),
    in_default_run=False, check_options=_convexity_dphubert_check, scores_cache_option="scores_cache",
    average_option="average",
    help="convexity chooses the depth, DPHuBERT prunes inside the kept layers to a sparsity of the whole teacher",
))  # fmt: skip
