"""Convexity layer pruning's settings and command-line options, torch-free (``harness compress
--help`` does not import torch) and written once: the recipe (``harness.compression.convexity.method``)
takes its defaults from here.
"""

from __future__ import annotations

import argparse

from harness.compression.convexity.selection import RULES

#: Label types whose convexity curves can choose the depth.
LABEL_TYPES = ("word", "phone", "speaker")
#: ``--labels`` default: every label type (the kept depth is the deepest choice over them).
DEFAULT_LABELS = "all"
#: ``--rule`` default: keep the layers up to the curves' peak.
DEFAULT_RULE = RULES[0]
#: Labelled segments per label type by schedule: the paper samples up to 5000; the CPU demo keeps
#: scoring and probes to about a minute.
MAX_POINTS = {"demo": 2000, "paper": 5000}
#: ``--depths``: ``rule`` writes the rule's depth only; ``all`` writes every depth 1 .. L-1 (one
#: compact checkpoint each, in ``OUT/layers-K``), the rule's marked ``selected``.
DEPTHS = ("rule", "all")
DEFAULT_DEPTHS = "rule"


def parse_labels(text: str) -> tuple[str, ...]:
    """``--labels``: ``all`` or comma-separated label types; an unknown one raises ``ValueError``."""
    chosen = LABEL_TYPES if text == "all" else tuple(t for t in text.split(",") if t)
    unknown = [t for t in chosen if t not in LABEL_TYPES]
    if unknown or not chosen:
        raise ValueError(f"--labels {text!r}: unknown label type {unknown[0] if unknown else ''!r}; "
                         f"use {', '.join(LABEL_TYPES)} (comma-separated) or all")  # fmt: skip
    return chosen


def check_options(preset: str, options: dict, teacher=None) -> None:
    """Refuse, before any work, what ``compress_convexity`` would refuse of its options
    (``teacher``, its EncoderConfig when known, is not needed here). The corpus-dependent check of
    ``finetune`` (its manifests) is made by the recipe, still before any scoring."""
    if preset not in MAX_POINTS:
        raise ValueError(f"unknown convexity preset {preset!r}; choose one of {', '.join(MAX_POINTS)}")
    parse_labels(options.get("labels") or DEFAULT_LABELS)
    rule, depths = options.get("rule") or DEFAULT_RULE, options.get("depths") or DEFAULT_DEPTHS
    if rule not in RULES:
        raise ValueError(f"--rule {rule!r}: choose one of {', '.join(RULES)}")
    if depths not in DEPTHS:
        raise ValueError(f"--depths {depths!r}: choose one of {', '.join(DEPTHS)}")
    average = options.get("average") or DEFAULT_AVERAGE
    if average not in AVERAGES:
        raise ValueError(f"--average {average!r}: choose one of {', '.join(AVERAGES)}")
    max_points = options.get("max_points")
    if max_points is not None and max_points < 2:
        raise ValueError(f"--max-points must be >= 2 (segments to compare), got {max_points}")
    finetune, steps = options.get("finetune"), options.get("finetune_steps")
    if finetune is not None:
        from tasks.registry import get_task

        get_task(finetune)  # an unknown task name lists the known ones
        if depths != "rule":
            raise ValueError("--finetune fine-tunes the rule's depth: give --depths rule (the default) with it")
    elif steps is not None:
        raise ValueError("--finetune-steps needs --finetune TASK")
    if steps is not None and steps < 1:
        raise ValueError(f"--finetune-steps must be >= 1, got {steps}")


#: ``--average``: a layer's convexity as the mean over classes (ours: every class counts once) or
#: over all sampled pairs (the convexity authors' nnconvexity: a class weighs by its pairs).
AVERAGES = ("classes", "pairs")
DEFAULT_AVERAGE = "classes"


def add_scoring_arguments(parser: argparse._ActionsContainer) -> list[str]:
    """The options that choose the depth from convexity curves (``--labels``, ``--rule``,
    ``--max-points``), shared with the convexity-guided DPHuBERT; returns their destinations."""
    add = parser.add_argument
    points = ", ".join(f"{name} {n}" for name, n in MAX_POINTS.items())
    actions = [
        add("--labels", default=None,
            help=f"{', '.join(LABEL_TYPES)} (comma-separated) or all (default: {DEFAULT_LABELS}: the deepest "
            "choice over the label types, so that each keeps the layers it needs)"),
        add("--rule", default=None, choices=RULES,
            help=f"where the kept layers end: {' or '.join(RULES)} (default: {DEFAULT_RULE}, the convexity paper's: "
            "keep the layers up to the curve's maximum)"),
        add("--max-points", type=int, default=None,
            help=f"labelled segments per label type (default: {points}; the paper samples up to 5000, the demo "
            "keeps the scoring to about a minute on a CPU)"),
        add("--average", default=None, choices=AVERAGES,
            help=f"a layer's convexity: the mean over classes (every class counts once) or over all sampled pairs "
            f"(the authors' nnconvexity: a class weighs by its pairs), for figures comparable with theirs; both "
            f"are written to convexity.json and drawn, the rule uses this one (default: {DEFAULT_AVERAGE})"),
    ]  # fmt: skip
    return [action.dest for action in actions]


def add_arguments(parser: argparse._ActionsContainer) -> list[str]:
    """Add the convexity options to ``parser``; returns their destinations (``compress_convexity``'s keywords)."""
    add = parser.add_argument
    scoring = add_scoring_arguments(parser)
    actions = [
        add("--depths", default=None, choices=DEPTHS,
            help="rule: one compact checkpoint at the rule's depth in OUT; all: one per depth 1 .. L-1 in "
            f"OUT/layers-K, the rule's pick marked, for comparisons at equal size (default: {DEFAULT_DEPTHS})"),
        add("--finetune", default=None, metavar="TASK",
            help="then fine-tune the pruned model and, for comparison, the full teacher end to end with "
            "TASK's head (asr, pr, sid or slu); writes OUT/finetune-TASK.json (test metric, training "
            "and inference time of both) and OUT/finetuned-TASK/; skipped if that JSON exists"),
        add("--finetune-steps", type=int, default=None, metavar="N",
            help="override the fine-tuning schedule's steps (harness.finetune.PRESETS)"),
    ]  # fmt: skip
    return scoring + [action.dest for action in actions]
