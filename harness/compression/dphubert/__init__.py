"""DPHuBERT: joint distillation and structured pruning (Peng et al., Interspeech 2023).

- ``method.py``: ``compress_dphubert``: the two stages and the final pruning;
- ``options.py``: its options, schedules (``demo``, ``paper``) and their defaults (torch-free);
- ``hardconcrete.py``: the HardConcrete gates and the expected-size term.
"""
