"""The fixed-student baseline's settings and command-line options, torch-free (``harness compress
--help`` does not import torch) and written once: the recipe (``harness.compression.distill``)
takes its defaults from here.

``distill`` is compared with DPHuBERT at equal size, so it runs on DPHuBERT's schedule: the same
preset (:data:`harness.compression.dphubert.options.PRESETS`), of which it takes the fields in
:data:`SCHEDULE_FIELDS` (steps and learning rates of both stages, batches, crops, seed, resume
points). What DPHuBERT has and a fixed student has not (gates, their learning rate, the sparsity
warm-up, the budget projection) is refused rather than ignored.
"""

from __future__ import annotations

import argparse

from harness.compression.dphubert.options import (
    DPHuBERTConfig,
    add_schedule_arguments,
    int_list,
    resolve_config,
)

#: ``--loss``: DistilHuBERT's prediction heads, or DPHuBERT's layer-to-layer loss.
LOSSES = ("prediction", "layer2layer")
#: The default reproduces the published baseline, DistilHuBERT, whose recipe DPHuBERT's paper
#: compares against; ``layer2layer`` isolates what pruning adds, with the loss held equal.
DEFAULT_LOSS = "prediction"
#: The fields of DPHuBERT's config that ``distill`` uses (everything about the schedule and the data).
SCHEDULE_FIELDS = (
    "sparsity", "stage1_steps", "stage1_lr", "stage1_warmup", "stage2_steps", "stage2_lr", "stage2_warmup",
    "weight_decay", "grad_clip", "batch_seconds", "crop_seconds", "min_seconds", "distill_layers",
    "student_dropout", "save_every", "seed", "threads",
)  # fmt: skip
#: The student lands at most this fraction of the budget under it (DistilHuBERT's 2 full layers are
#: 0.9 % under a 0.75 sparsity of HuBERT Base).
SIZE_TOLERANCE = 0.01


def resolve_schedule(preset: str, sparsity: float, options: dict) -> DPHuBERTConfig:
    """DPHuBERT's preset with ``sparsity`` and the given schedule ``options``; options that only
    pruning has (``reg_lr``, ``prune``, ...) or unknown names are refused."""
    given = {k for k, v in options.items() if v is not None}
    foreign = sorted(given - set(SCHEDULE_FIELDS))
    if foreign:
        raise ValueError(f"unknown distill options {foreign}; known: {', '.join(sorted(SCHEDULE_FIELDS))}")
    return resolve_config(preset, sparsity, options)


def add_arguments(parser: argparse._ActionsContainer) -> list[str]:
    """Add the options of ``--method distill`` to ``parser``; returns their destinations
    (``compress_distill``'s keywords)."""
    add = parser.add_argument
    schedule = add_schedule_arguments(
        parser,
        sparsity_help="fraction of the teacher's parameters to remove; the student keeps the teacher's width, "
        "takes its first k layers and, if k whole layers are more than 1 %% under the budget, one layer more "
        "with fewer FFN units (and heads, if need be), landing within 1 %% under (1 - s) x teacher parameters "
        f"(default {DPHuBERTConfig.sparsity:g}, DPHuBERT's, for rows of equal size; on HuBERT Base that is "
        "DistilHuBERT's 2-layer student)",
        stage_help=("steps of the first stage, on DPHuBERT's stage-1 schedule (no gates: the student is fixed)",
                    "steps of the second stage, on DPHuBERT's stage-2 schedule; both stages add up to DPHuBERT's steps"),
    )  # fmt: skip
    actions = [
        *schedule,
        add("--loss", default=None, choices=LOSSES,
            help="prediction: DistilHuBERT's heads on the student's last layer predict the teacher's states, "
            "loss L1 - log sigmoid(cosine) summed over them; layer2layer: DPHuBERT's loss, student state "
            "round(t k / L) against teacher state t through its own projection, L1 - cosine averaged "
            f"(default {DEFAULT_LOSS}: the published baseline's recipe; layer2layer holds the loss equal to DPHuBERT's)"),
        add("--distill-layers", type=int_list, default=None,
            help="teacher hidden states to predict, e.g. 4,8,12 (default: every L/3-th, as DistilHuBERT's 4,8,12; "
            "with --loss layer2layer also 0, as DPHuBERT)"),
    ]  # fmt: skip
    return [action.dest for action in actions]


def check_options(preset: str, options: dict, teacher=None) -> DPHuBERTConfig:
    """Refuse, before any work, what ``compress_distill`` would refuse of its options; returns the
    schedule. The budget against a known teacher is :func:`harness.compression.distill.check_student_size`
    (the registry's ``teacher_check``: it needs torch)."""
    rest = {key: value for key, value in options.items() if key not in ("sparsity", "loss")}
    loss = options.get("loss") or DEFAULT_LOSS
    if loss not in LOSSES:
        raise ValueError(f"--loss {loss!r}: choose one of {', '.join(LOSSES)}")
    sparsity = options.get("sparsity")
    return resolve_schedule(preset, DPHuBERTConfig.sparsity if sparsity is None else sparsity, rest)
