"""The ``harness`` command and what it runs, one room per concern:

- ``cli.py``, ``commands/``: the command line, one module per subcommand;
- ``run.py``, ``workers.py``: ``harness run``'s resumable pipeline and the processes it runs in;
- ``evaluation/``: the evaluation engine (SUPERB-style heads on frozen features, the feature cache,
  online extraction, the cache plan, provenance, SUPERB-challenge MACs, its config);
- ``compression/``: the compression methods and their registry (``compression/registry.py``);
- ``pretrain.py``, ``pretrain_config.py``: HuBERT pretraining of a small teacher;
- ``finetune.py``, ``finetune_model.py``: fine-tuning an encoder and its head end to end, in
  resumable pairs (the convexity paper's last step; the study in ``studies/`` uses it);
- ``training.py``, ``batching.py``, ``devices.py``: what every training loop shares (process
  group, seeds, state files, schedules; the batch samplers; the device).

Run records are defined in :mod:`core.records`; studies built on these parts live in ``studies/``.
"""
