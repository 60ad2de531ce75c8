"""DPHuBERT's settings: the config dataclass, its presets and its command-line options, kept apart
from the recipe (``harness.compression.dphubert.method``) so that ``harness compress --help`` does not
import torch, and so that every default is written once, here.

Every option's destination is a field of :class:`DPHuBERTConfig`; ``compress_dphubert(**options)``
applies the given values as overrides of the preset and refuses names it does not know. Option
defaults are None (the preset decides); the help text shows the presets' values.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

from harness.compression.sparsity import check_sparsity

#: Structures DPHuBERT can gate: the paper's recipe prunes "conv, head, interm".
UNIT_KINDS = ("conv", "heads", "ffn_units")


@dataclass
class DPHuBERTConfig:
    """Schedule and options of one DPHuBERT run (fractions are of the stage's steps)."""

    sparsity: float = 0.75
    stage1_steps: int = 50_000
    stage1_lr: float = 2e-4
    stage1_warmup: float = 0.3  # 15k of 50k
    sparsity_warmup: float = 0.1  # target rises from 0 over 5k of 50k steps
    reg_lr: float = 0.02  # log_alpha: +reg_lr, lambdas: -reg_lr (ascent)
    stage2_steps: int = 25_000
    stage2_lr: float = 1e-4
    stage2_warmup: float = 0.2  # 5k of 25k
    weight_decay: float = 0.0
    grad_clip: float = 10.0
    batch_seconds: float = 160.0  # audio per batch and process, after cropping
    crop_seconds: float = 15.625  # longest crop; a batch is cropped to its shortest item
    min_seconds: float = 2.0  # shorter utterances are not used
    distill_layers: list[int] | None = None  # None: 0 and every L/3-th hidden state
    prune: list[str] | None = None  # None: conv, heads, ffn_units (no conv for layer-norm extractors)
    prune_blocks: bool = False
    student_dropout: float = 0.0
    budget_tolerance: float = 0.005  # project onto the budget when further off than this
    save_every: int = 1000
    seed: int = 0
    threads: int | None = None  # torch intra-op threads (None: torch's default); not part of the result

    def validate(self) -> None:
        check_sparsity(self.sparsity)
        if self.stage1_steps < 1 or self.stage2_steps < 0:
            raise ValueError("--stage1-steps must be >= 1 and --stage2-steps >= 0")
        if self.batch_seconds < 0.05 or self.crop_seconds < 0.05:
            raise ValueError("--batch-seconds and --crop-seconds must be at least 0.05 s")
        if self.save_every < 1:
            raise ValueError("--save-every must be >= 1")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {self.threads}")
        if self.distill_layers is not None and (not self.distill_layers or min(self.distill_layers) < 0):
            raise ValueError(f"--distill-layers {self.distill_layers}: give hidden-state indices >= 0")
        unknown = sorted(set(self.prune or ()) - set(UNIT_KINDS))
        if unknown:
            raise ValueError(f"--prune: unknown structures {unknown}; choose from {', '.join(UNIT_KINDS)}")


PRESETS = {
    # The paper's schedule (4 GPUs; LibriSpeech 960 h).
    "paper": DPHuBERTConfig(),
    # CPU demo: the embedded 5.3 M-parameter teacher on SynthSpeech in about 4 minutes on 2 cores, so
    # that `harness run` fits its 20-minute budget. One thread: on a shared machine two threads wait on
    # each other (3x slower measured under load).
    "demo": DPHuBERTConfig(
        stage1_steps=200, stage1_lr=5e-4, stage1_warmup=0.1, sparsity_warmup=0.5, reg_lr=0.1,
        stage2_steps=60, stage2_lr=3e-4, stage2_warmup=0.1, batch_seconds=8.0, crop_seconds=2.0, min_seconds=0.5,
        save_every=50, threads=1,
    ),  # fmt: skip
}


def resolve_config(preset: str, sparsity: float, options: dict) -> DPHuBERTConfig:
    """The preset with ``sparsity`` and non-None ``options`` applied; unknown options are refused."""
    if preset not in PRESETS:
        raise ValueError(f"unknown DPHuBERT preset {preset!r}; choose one of {', '.join(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(DPHuBERTConfig)}
    overrides = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown DPHuBERT options {unknown}; known: {', '.join(sorted(fields))}")
    config = dataclasses.replace(PRESETS[preset], sparsity=sparsity, **overrides)
    config.validate()
    return config


def check_options(preset: str, options: dict, teacher=None) -> None:
    """Refuse, before any work, what ``compress_dphubert`` would refuse of its options; with
    ``teacher`` (its EncoderConfig), also hidden states it does not have."""
    sparsity = options.get("sparsity")
    rest = {key: value for key, value in options.items() if key != "sparsity"}
    config = resolve_config(preset, DPHuBERTConfig.sparsity if sparsity is None else sparsity, rest)
    if teacher is not None and config.distill_layers and max(config.distill_layers) > teacher.num_layers:
        raise ValueError(f"--distill-layers {config.distill_layers}: the teacher has hidden states 0..{teacher.num_layers}")


def int_list(text: str) -> list[int]:
    try:
        return [int(item) for item in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 0,4,8,12, got {text!r}") from None


def _name_list(text: str) -> list[str]:
    return [item for item in text.split(",") if item]


def add_schedule_arguments(
    parser: argparse._ActionsContainer,
    sparsity_help: str,
    stage_help: tuple[str, str] = ("distill+prune steps", "final distillation steps of the pruned model"),
) -> list[argparse.Action]:
    """The options of DPHuBERT's schedule, which the methods compared with it at equal budgets share
    (the target, both stages' steps and learning rates, the batches, the resume points, the threads).

    ``sparsity_help`` and ``stage_help`` (what stage 1 and stage 2 do) say what they mean for the
    method at hand; the defaults shown are the presets'.
    """
    add = parser.add_argument
    paper, demo = PRESETS["paper"], PRESETS["demo"]
    return [
        add("--sparsity", type=float, default=None, help=sparsity_help),
        add("--stage1-steps", type=int, default=None,
            help=f"{stage_help[0]} (paper {paper.stage1_steps}, demo {demo.stage1_steps})"),
        add("--stage2-steps", type=int, default=None,
            help=f"{stage_help[1]} (paper {paper.stage2_steps}, demo {demo.stage2_steps})"),
        add("--stage1-lr", type=float, default=None, help=f"peak learning rate of stage 1 (paper {paper.stage1_lr:g})"),
        add("--stage2-lr", type=float, default=None, help=f"peak learning rate of stage 2 (paper {paper.stage2_lr:g})"),
        add("--batch-seconds", type=float, default=None,
            help=f"seconds of audio per batch and process (paper {paper.batch_seconds:g})"),
        add("--crop-seconds", type=float, default=None, help=f"longest crop per utterance (paper {paper.crop_seconds:g})"),
        add("--save-every", type=int, default=None,
            help=f"steps between resume points (paper {paper.save_every}, demo {demo.save_every})"),
        add("--threads", type=int, default=None, help=f"torch CPU threads of the distillation methods (dphubert, distill, convexity_dphubert; demo "
            f"{demo.threads}, paper torch's default); convexity runs with torch's default"),
    ]  # fmt: skip


def add_arguments(
    parser: argparse._ActionsContainer,
    sparsity_help: str | None = None,
    distill_layers_help: str = "hidden states to distil, e.g. 0,4,8,12 (default: 0 and every L/3-th)",
) -> list[str]:
    """Add DPHuBERT's options to ``parser`` (a parser or an argument group); a method that runs
    DPHuBERT inside (the convexity-guided hybrid) words the target and the distilled states its way.

    Returns:
        The destinations of the added options (``sparsity``, ``stage1_steps``, ...), which are the
        keyword names ``compress_dphubert`` takes.
    """
    add = parser.add_argument
    paper = PRESETS["paper"]
    sparsity_help = sparsity_help or f"fraction of the teacher's parameters to remove (default {DPHuBERTConfig.sparsity:g})"
    actions = [
        *add_schedule_arguments(parser, sparsity_help),
        add("--reg-lr", type=float, default=None,
            help=f"learning rate of the gates; the multipliers use minus this (paper {paper.reg_lr:g})"),
        add("--distill-layers", type=int_list, default=None, help=distill_layers_help),
        add("--prune", type=_name_list, default=None,
            help="structures to gate, from conv,heads,ffn_units (default: all three as in the paper; no conv for "
            "layer-norm extractors, whose pruning is not exact)"),
        add("--prune-blocks", action="store_const", const=True, default=None,
            help="also gate whole attention and FFN blocks (the paper's recipe does not)"),
    ]  # fmt: skip
    return [action.dest for action in actions]
