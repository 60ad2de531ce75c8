"""The registry of compression methods behind ``harness compress --method NAME`` and ``harness run``.

Each entry is a :class:`Method`: its compress function (``"module:attr"``, imported on first use),
its command-line options (a torch-free ``add_arguments(group)``), the schedules it has, and how it
reaches a target size. ``harness run`` reads these declarations and never names a method.

A compress function is ``compress(teacher, out, *, corpus, preset, device, **options) -> Path``; it
writes a compact checkpoint (``upstreams.checkpoint`` format) to ``out`` and returns it. The
checkpoint's metadata holds ``compression = {"method", "teacher", "sparsity", "dir", ...}``, which
the run records and the leaderboard read.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass

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
        help: one line for ``--help``.
    """

    name: str
    entry: str
    add_arguments: Callable[[argparse._ActionsContainer], list[str]]
    schedules: tuple[str, ...] = ("demo", "paper")
    target_option: str | None = None
    default_target: float | None = None
    help: str = ""

    @property
    def compress(self) -> Callable:
        module, attr = self.entry.split(":", 1)
        return getattr(importlib.import_module(module), attr)

    def jobs(self, targets: list[float] | None) -> list[tuple[str, dict]]:
        """``(output folder name, options)`` per checkpoint this method makes in a run: one per
        target size for a method that takes one (``targets`` None: its default), else one."""
        if self.target_option is None:
            return [(self.name, {})]
        return [(f"{self.name}-{t:g}", {self.target_option: t}) for t in (targets or [self.default_target])]


def _convexity_arguments(group: argparse._ActionsContainer) -> list[str]:
    from harness.compression.convexity_options import add_arguments

    return add_arguments(group)


def _dphubert_arguments(group: argparse._ActionsContainer) -> list[str]:
    from harness.compression.dphubert_options import add_arguments

    return add_arguments(group)


def _dphubert_default_sparsity() -> float:
    from harness.compression.dphubert_options import DPHuBERTConfig

    return DPHuBERTConfig.sparsity


METHODS: Registry[Method] = Registry("compression method")
METHODS.register("convexity", Method(
    "convexity", "harness.compression.convexity:compress_convexity", _convexity_arguments,
    help="layer pruning: keep the layers up to where graph convexity of the labels peaks (or plateaus)",
))  # fmt: skip
METHODS.register("dphubert", Method(
    "dphubert", "harness.compression.dphubert:compress_dphubert", _dphubert_arguments,
    target_option="sparsity", default_target=_dphubert_default_sparsity(),
    help="joint distillation and structured pruning (heads, FFN units, conv channels) to a target sparsity",
))  # fmt: skip
