"""The evaluation engine: SUPERB-style downstream heads trained on an upstream's frozen features.

- ``engine.py``: ``evaluate(config)``: the session, each task's splits, training, test, record;
- ``heads.py``: the downstream model (s3prl's Featurizer and a task head), its training and prediction;
- ``config.py``: ``EvaluateConfig``, the one home of the engine's defaults;
- ``cache.py``: the feature cache (entries keyed by upstream and audio, frames or pooled means);
- ``extraction.py``: filling a cache entry (batched forward passes, resumable parts, progress);
- ``online.py``: features computed inside the training loop when a split does not fit the cache;
- ``plan.py``: what a run would cache or extract, against the cache budget;
- ``provenance.py``: what a record says of where and how it was made, and its assembly;
- ``superb_macs.py``: MACs counted as the SUPERB challenge counts them (LibriSpeech test-clean).

s3prl entry names and the checkpoint trust checks live in :mod:`upstreams.s3prl_hub`, checkpoint
identity in :mod:`upstreams.identity`, corpus checksums in :mod:`tasks.corpora.checksums`.
"""
