"""Studies: experiments built on the harness whose reports and tables are published or quoted in
model cards. Each study is a module run with ``python -m studies.NAME`` (``--help`` for its options):

- ``convexity_finetune.py``: the convexity paper's fine-tuning study (each task's cut against the
  full teacher, fine-tuned end to end, by the recipe :mod:`harness.finetune`), with
  ``finetune_table.py``, its table (reports read through :class:`finetune_table.Report`);
- ``teacher_quality.py``: a teacher's frozen features against FBANK, with paired intervals;
- ``teacher_layers.py``: convexity, probes and block influence per hidden state, for a model card.

Studies sit above every other package: they may import ``harness``, nothing imports them.
"""
