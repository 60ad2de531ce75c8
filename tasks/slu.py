"""SLU (SUPERB's intent classification, IC): action, object and location of a spoken command.

SUPERB's head (s3prl ``MeanPoolingLinear`` in the ``SuperbIC`` recipe): a linear projection to
256, mean pooling, and one linear classifier per slot (one layer holding all slots' logits). An
utterance counts as right only when all three slots are. Adam at 1e-4, batches of 32, 200k steps.
"""

from __future__ import annotations

from tasks.base import ClassificationTask, TaskPreset, TrainConfig
from tasks.metrics import accuracy
from tasks.registry import register_task
from tasks.sid import MeanPoolingHead, PoolingHeadConfig


@register_task("slu")
class SLU(ClassificationTask):
    """Intent classification over three slots; labels are ``"action ; object ; location"``."""

    manifest_task = "slu"
    slots = ("action", "object", "location")
    metric_names = ("accuracy",)
    main_metric = "accuracy"
    higher_is_better = True
    presets = {
        "demo": TaskPreset(
            head=PoolingHeadConfig(),
            # 1500 steps at 1e-2: at 400 steps and 1e-3 the head was under-fit (training loss 3.4 of 4.3 at
            # the end; the previous embedded teacher: 10.4 % at 400 / 1e-3, 22.9 % at 1500 / 1e-2)
            train=TrainConfig(steps=1500, batch_size=16, lr=1e-2, lr_grid=(3e-3, 1e-2, 3e-2), eval_every=100, warmup_fraction=0.05),
        ),
        "paper": TaskPreset(
            head=PoolingHeadConfig(),
            train=TrainConfig(steps=200_000, batch_size=32, lr=1e-4, lr_grid=(1e-5, 1e-4, 1e-3), eval_every=5000),
        ),
    }

    def build_head(self, input_size: int, config: PoolingHeadConfig) -> MeanPoolingHead:
        return MeanPoolingHead(input_size, sum(self.num_classes), config.projector_dim)

    def score(self, references: list, predictions: list) -> dict[str, float]:
        return {"accuracy": accuracy(references, predictions)}
