"""The convexity-guided DPHuBERT's options, torch-free and written once: convexity's scoring options
(``--labels``, ``--rule``, ``--max-points``, with convexity's defaults) choose the depth, and
DPHuBERT's options (with DPHuBERT's presets) prune inside it.

Defaults and why:

- ``--sparsity`` 0.75, DPHuBERT's: counted on the whole teacher, so the hybrid's rows share
  budgets with the other methods'.
- ``--labels all`` and ``--rule peak``, convexity's: the kept depth is the deepest peak over the
  label types, so that no label type loses the layers it needs before DPHuBERT prunes inside them.
- ``--distill-layers``: 0 and every d/3-th state of the kept depth d, DPHuBERT's choice applied to
  the model that is pruned.
"""

from __future__ import annotations

import argparse

from harness.compression.convexity.options import DEFAULT_LABELS, DEFAULT_RULE, add_scoring_arguments
from harness.compression.dphubert.options import DPHuBERTConfig
from harness.compression.dphubert.options import add_arguments as add_dphubert_arguments

__all__ = ["DEFAULT_LABELS", "DEFAULT_RULE", "add_arguments"]


def add_arguments(parser: argparse._ActionsContainer) -> list[str]:
    """Add the options of ``--method convexity_dphubert`` to ``parser``; returns their destinations
    (``compress_convexity_dphubert``'s keywords)."""
    scoring = add_scoring_arguments(parser)
    pruning = add_dphubert_arguments(
        parser,
        sparsity_help="fraction of the WHOLE teacher's parameters to remove, the dropped layers included: "
        "the truncated model is pruned to (1 - s) x teacher parameters; if the depth alone is already at "
        "or under that, nothing more is pruned and the checkpoint says so (under_budget) "
        f"(default {DPHuBERTConfig.sparsity:g}, DPHuBERT's, for rows of equal size)",
        distill_layers_help="hidden states of the kept depth d to distil, e.g. 0,1,2,3 (default: 0 and every "
        "d/3-th, DPHuBERT's choice for the model being pruned)",
    )
    return scoring + pruning


def check_options(preset: str, options: dict, teacher=None) -> None:
    """Refuse, before any work, what ``compress_convexity_dphubert`` would refuse of its options:
    convexity's scoring options and DPHuBERT's pruning ones (the depth, chosen from the corpus, is
    not known before the scoring, so ``--distill-layers`` are checked against the whole teacher)."""
    from harness.compression.convexity.options import check_options as check_scoring
    from harness.compression.dphubert.options import check_options as check_pruning

    scoring = {key: options.get(key) for key in ("labels", "rule", "max_points", "average")}
    check_scoring(preset, scoring, teacher)
    check_pruning(preset, {key: value for key, value in options.items() if key not in scoring}, teacher)
