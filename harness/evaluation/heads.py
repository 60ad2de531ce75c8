"""The downstream model of a SUPERB-style evaluation, its training and its predictions.

:class:`DownstreamModel` is s3prl's Featurizer (a learned softmax-weighted sum of the upstream's
layers) followed by a task head; :func:`train_head` trains it on one split's cached features with
Adam, keeping the step that is best on valid; :func:`predict` decodes a split in manifest order.
A split's features come from the cache (:mod:`harness.evaluation.cache`) or are computed online
(:mod:`harness.evaluation.online`); :class:`SplitData` pairs them with the manifest's references.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from core.audio import SAMPLE_RATE
from harness.batching import BucketedBatches
from harness.evaluation.entries import FeatureSet, PooledSet
from harness.evaluation.online import OnlineSet
from harness.training import Runtime, lr_factor_fn
from tasks.base import Task, TaskPreset

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------- data


@dataclass
class SplitData:
    """One split of one task: cached features plus, per manifest row, its storage row and reference."""

    features: FeatureSet | PooledSet | OnlineSet
    rows: np.ndarray  # [utterances] row in the cache entry
    references: list
    ids: list[str]
    targets: list[torch.Tensor] = field(default_factory=list)  # train only

    @property
    def lengths(self) -> np.ndarray:
        return self.features.lengths[self.rows]


class _LayerShapes:
    """The few attributes s3prl's Featurizer reads from an upstream at construction."""

    def __init__(self, features: FeatureSet | PooledSet) -> None:
        self.num_layers = features.num_layers
        self.hidden_sizes = [features.hidden_size] * features.num_layers
        self.downsample_rates = [features.downsample_rate] * features.num_layers


def collate(
    data: SplitData, batch: list[int], device: str, max_frames: int | None = None, rng: np.random.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad a batch of cached utterances; training crops long ones at random to ``max_frames``.

    Returns:
        (Tensor, Tensor): features ``[B, T, layers, D]`` float32 (pooled entries: the means
        ``[B, layers, D]``, never cropped) and lengths ``[B]`` (frames per utterance).
    """
    if data.features.kind == "online":
        return data.features.batch([int(data.rows[i]) for i in batch], device, max_frames, rng)
    if data.features.kind == "pooled":
        rows = [int(data.rows[i]) for i in batch]
        means = np.stack([data.features.get(row) for row in rows])
        return torch.from_numpy(means).to(device), torch.tensor(data.features.lengths[rows], dtype=torch.long)
    pieces = []
    for i in batch:
        piece = data.features.get(int(data.rows[i]))
        if max_frames is not None and len(piece) > max_frames:
            start = int(rng.integers(0, len(piece) - max_frames + 1)) if rng is not None else 0
            piece = piece[start : start + max_frames]
        pieces.append(piece)
    lengths = [len(p) for p in pieces]
    padded = np.zeros((len(pieces), max(lengths), *pieces[0].shape[1:]), dtype=np.float16)
    for b, piece in enumerate(pieces):
        padded[b, : len(piece)] = piece
    return torch.from_numpy(padded).to(device).float(), torch.tensor(lengths, dtype=torch.long)


class DownstreamModel(nn.Module):
    """s3prl's Featurizer (weighted sum of layers) followed by a task head.

    Given pooled statistics ``[B, layers, D]`` (each layer's mean over an utterance's valid frames),
    the Featurizer's weighted sum runs on them as on a one-frame utterance and the head's
    ``forward_pooled`` takes the result: for a head linear up to its mean pooling these are the
    logits the frames give (the weighted sum, the projection and the mean commute).
    """

    def __init__(self, features: FeatureSet | PooledSet, head: nn.Module) -> None:
        super().__init__()
        from s3prl.nn import Featurizer

        self.featurizer = Featurizer(_LayerShapes(features))
        self.head = head

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> Any:
        """``[B, T, layers, D]`` (or pooled ``[B, layers, D]``), ``[B]`` -> the head's output."""
        if features.dim() == 3:
            layers = list(features.unsqueeze(1).unbind(dim=2))  # one [B, 1, D] per layer
            x, _ = self.featurizer(layers, [torch.ones_like(lengths)] * len(layers))
            return self.head.forward_pooled(x[:, 0])
        layers = list(features.unbind(dim=2))
        x, lengths = self.featurizer(layers, [lengths] * len(layers))
        return self.head(x, lengths)

    def layer_weights(self) -> list[float]:
        weights = getattr(self.featurizer, "weights", None)
        return [1.0] if weights is None else torch.softmax(weights.detach().float(), dim=-1).tolist()


# ----------------------------------------------------------------------------------- training


@dataclass
class TrainResult:
    lr: float
    best_step: int
    valid_metrics: dict[str, float]
    state: dict[str, torch.Tensor]
    history: list[dict[str, Any]]
    layer_weights: list[float]
    seconds: float


@torch.no_grad()
def predict(
    model: DownstreamModel, task: Task, data: SplitData, batch_size: int, device: str, runtime: Runtime | None = None
) -> list:
    """Predictions for every utterance of ``data``, in manifest order. Under ``torchrun`` each rank
    predicts every ``world_size``-th batch and all ranks get all predictions."""
    model.eval()
    order = np.argsort(data.lengths, kind="stable")
    rank, world = (runtime.rank, runtime.world_size) if runtime else (0, 1)
    mine: list[tuple[int, Any]] = []
    for start in list(range(0, len(order), batch_size))[rank::world]:
        batch = order[start : start + batch_size].tolist()
        features, lengths = collate(data, batch, device)
        mine += list(zip(batch, task.decode(model(features, lengths), lengths), strict=True))
    if world > 1:
        gathered: list = [None] * world
        dist.all_gather_object(gathered, mine)
        mine = [pair for part in gathered for pair in part]
    predictions: list = [None] * len(order)
    for i, prediction in mine:
        predictions[i] = prediction
    return predictions


def train_head(
    task: Task,
    preset: TaskPreset,
    train: SplitData,
    valid: SplitData,
    lr: float,
    seed: int,
    device: str,
    runtime: Runtime | None = None,
) -> TrainResult:
    """Train Featurizer + head on ``train`` with Adam at ``lr``; keep the step best on ``valid``.

    Under ``torchrun`` (``runtime.world_size`` > 1) the model is wrapped in DistributedDataParallel
    and every rank draws the same batches, trains on its ``rank``-th share of each and weighs its
    loss by that share, so the averaged gradient is the whole batch's: the result does not depend
    on the number of processes beyond float noise (and, with a training crop, the crops drawn).
    """
    cfg = preset.train
    start = time.perf_counter()
    rank, world = (runtime.rank, runtime.world_size) if runtime else (0, 1)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = DownstreamModel(train.features, task.build_head(train.features.hidden_size, preset.head)).to(device)
    forward = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = None
    if cfg.warmup_fraction is not None:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor_fn(cfg.steps, cfg.warmup_fraction))
    max_frames = None
    if cfg.max_train_seconds is not None:
        max_frames = max(1, round(cfg.max_train_seconds * SAMPLE_RATE / train.features.downsample_rate))
    batches = BucketedBatches(train.lengths, cfg.batch_size, rng)
    best_value, best_step, best_metrics, best_state, best_weights = None, 0, {}, {}, []
    history: list[dict[str, Any]] = []
    bar = tqdm(range(1, cfg.steps + 1), desc=f"train {task.name} lr={lr:g}", unit="step", disable=rank != 0 or None)
    for step in bar:
        model.train()
        total_loss = 0.0
        for _ in range(cfg.grad_accum):
            batch = next(batches)
            part, weight = batch, 1.0 / cfg.grad_accum
            crops = rng
            if world > 1:  # the batch order stays the same on every rank; crops come from the rank's own stream
                part = batch[rank::world] or batch[:1]
                weight *= world * len(batch[rank::world]) / len(batch)
                crops = np.random.default_rng([seed, step, rank])
            features, lengths = collate(train, part, device, max_frames, crops)
            loss = task.loss(forward(features, lengths), lengths, [train.targets[i] for i in part]) * weight
            loss.backward()
            total_loss += float(loss.detach()) / world
        if world > 1:
            total = torch.tensor([total_loss])
            dist.all_reduce(total)
            total_loss = float(total)
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if scheduler is not None:
            scheduler.step()
        bar.set_postfix(loss=f"{total_loss:.3f}")
        if step % cfg.eval_every == 0 or step == cfg.steps:
            metrics = task.score(valid.references, predict(model, task, valid, cfg.eval_batch_size, device, runtime))
            history.append({"step": step, "train_loss": total_loss, **{f"valid_{k}": v for k, v in metrics.items()}})
            logger.info("%s lr=%g step %d: loss %.3f, valid %s", task.name, lr, step, total_loss, format_metrics(metrics))
            if task.is_better(metrics[task.main_metric], best_value):
                best_value, best_step, best_metrics = metrics[task.main_metric], step, metrics
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                best_weights = model.layer_weights()
    bar.close()
    return TrainResult(lr, best_step, best_metrics, best_state, history, best_weights, time.perf_counter() - start)



def format_metrics(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in metrics.items())
