"""DPHuBERT's command-line options, kept apart from the recipe so that ``harness compress --help``
does not import torch.

Every option's destination is a field of ``harness.compression.dphubert.DPHuBERTConfig`` (or
``sparsity``); ``compress_dphubert(**options)`` applies the values as overrides of the preset and
refuses names it does not know. Defaults are None: the preset decides.
"""

from __future__ import annotations

import argparse


def _int_list(text: str) -> list[int]:
    try:
        return [int(item) for item in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 0,4,8,12, got {text!r}") from None


def _name_list(text: str) -> list[str]:
    return [item for item in text.split(",") if item]


def add_arguments(parser: argparse._ActionsContainer) -> list[str]:
    """Add DPHuBERT's options to ``parser`` (a parser or an argument group).

    Returns:
        The destinations of the added options (``sparsity``, ``stage1_steps``, ...), which are the
        keyword names ``compress_dphubert`` takes.
    """
    add = parser.add_argument
    actions = [
        add("--sparsity", type=float, default=None, help="fraction of the teacher's parameters to remove (default 0.75)"),
        add("--stage1-steps", type=int, default=None, help="distill+prune steps (paper 50000, demo 200)"),
        add("--stage2-steps", type=int, default=None, help="final distillation steps of the pruned model (paper 25000, demo 60)"),
        add("--stage1-lr", type=float, default=None, help="peak learning rate of stage 1 (paper 2e-4)"),
        add("--stage2-lr", type=float, default=None, help="peak learning rate of stage 2 (paper 1e-4)"),
        add("--reg-lr", type=float, default=None, help="learning rate of the gates; the multipliers use minus this (paper 0.02)"),
        add("--batch-seconds", type=float, default=None, help="seconds of audio per batch and process (paper 160)"),
        add("--crop-seconds", type=float, default=None, help="longest crop per utterance (paper 15.625)"),
        add("--distill-layers", type=_int_list, default=None,
            help="hidden states to distil, e.g. 0,4,8,12 (default: 0 and every L/3-th)"),
        add("--prune", type=_name_list, default=None,
            help="structures to gate, from conv,heads,ffn_units (default: all three as in the paper; no conv for "
            "layer-norm extractors, whose pruning is not exact)"),
        add("--prune-blocks", action="store_const", const=True, default=None,
            help="also gate whole attention and FFN blocks (the paper's recipe does not)"),
        add("--save-every", type=int, default=None, help="steps between resume points (paper 1000, demo 50)"),
        add("--threads", type=int, default=None, help="torch CPU threads (demo 1; paper: torch's default)"),
    ]  # fmt: skip
    return [action.dest for action in actions]
