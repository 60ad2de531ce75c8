"""KS: SUPERB's keyword spotting, 12 classes, scored by accuracy.

The ten keywords of Speech Commands (yes, no, up, down, left, right, on, off, stop, go), every
other word as ``_unknown_``, and ``_silence_``: one-second crops of the dataset's
``_background_noise_`` recordings, written by ``harness corpus prepare speech_commands`` into the
corpus' ``ks`` manifests (:mod:`tasks.corpora.speech_commands`). SUPERB's head (s3prl
``MeanPoolingLinear`` in its ``SuperbKS`` recipe): a linear projection, mean pooling, a linear
classifier; Adam at 1e-4, batches of 32, 200k steps.

On a corpus with spoken words but no ``ks`` manifests (SynthSpeech's one-second command words)
the task reads the ``words`` manifests: there is no background noise to crop, so the task has no
``_silence_`` class there (11 classes), and its records say so (``config.labels.silence``). A
corpus without words is refused with the reason.
"""

from __future__ import annotations

import os
from pathlib import Path

from tasks.base import ClassificationTask, TaskPreset, TrainConfig
from tasks.metrics import accuracy
from tasks.registry import register_task
from tasks.sid import MeanPoolingHead, PoolingHeadConfig

KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN, SILENCE = "_unknown_", "_silence_"


@register_task("ks")
class KS(ClassificationTask):
    """Keyword spotting: one slot, the keyword, ``_unknown_`` or ``_silence_``."""

    manifest_task = "ks"
    slots = ("keyword",)
    metric_names = ("accuracy",)
    main_metric = "accuracy"
    higher_is_better = True
    presets = {
        "demo": TaskPreset(
            head=PoolingHeadConfig(),
            train=TrainConfig(steps=1000, batch_size=16, lr=1e-2, lr_grid=(3e-3, 1e-2, 3e-2), eval_every=100, warmup_fraction=0.05),
        ),
        "paper": TaskPreset(
            head=PoolingHeadConfig(),
            train=TrainConfig(steps=200_000, batch_size=32, lr=1e-4, lr_grid=(1e-5, 1e-4, 1e-3), eval_every=5000),
        ),
    }

    def manifest_for(self, corpus: str | os.PathLike) -> str:
        """``ks`` where the corpus has those manifests, else its ``words`` (no ``_silence_`` class)."""
        manifests = Path(corpus) / "manifests"
        for name in ("ks", "words"):
            if (manifests / name).is_dir():
                return name
        raise ValueError(
            f"{corpus}: keyword spotting needs spoken words (manifests/ks from `harness corpus prepare "
            "speech_commands`, or SynthSpeech's manifests/words); this corpus has neither"
        )

    def parse_label(self, cell: str) -> tuple[str, ...]:
        word = cell.strip()
        return (word if word in KEYWORDS or word in (UNKNOWN, SILENCE) else UNKNOWN,)

    def label_state(self) -> dict:
        state = super().label_state()
        has_silence = any(SILENCE in classes for classes in self.classes)
        state["silence"] = "background-noise crops" if has_silence else "none: the corpus has no background noise"
        return state

    def build_head(self, input_size: int, config: PoolingHeadConfig) -> MeanPoolingHead:
        return MeanPoolingHead(input_size, sum(self.num_classes), config.projector_dim)

    def score(self, references: list, predictions: list) -> dict[str, float]:
        return {"accuracy": accuracy(references, predictions)}
