"""Compression methods: each one turns a teacher into compact checkpoints.

- ``registry.py``: the registry of methods (``--method NAME``) with what each declares;
- ``convexity/``: convexity-based layer pruning (the method, its options, the graph convexity
  score, the other layer scores, the layer selection rule, the scores cache, the curves file and
  its plot);
- ``dphubert/``: DPHuBERT (the method, its options and schedules, the HardConcrete gates);
- ``distill.py``, ``distill_options.py``: distillation into a fixed student (DistilHuBERT's recipe);
- ``convexity_dphubert.py``, ``convexity_dphubert_options.py``: DPHuBERT inside convexity's layers;
- ``distillation_recipe.py``: the distillation training recipe those three methods share (student,
  loss, stages, resume).

Modules are imported directly (``harness.compression.convexity.graph``); the package files stay
free of imports so that worker processes and the CLI start fast.
"""
