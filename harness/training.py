"""Pieces every training recipe here shares: device and distributed set-up, the learning-rate
schedule, resumable training state, and audio batches cut from a corpus.

Recipes (``harness/pretrain.py``, ``harness/compression/distillation_recipe.py`` and its users) stay flat and readable;
what they have in common lives here once.
"""

from __future__ import annotations

import logging
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from core.files import atomic_path
from harness.devices import resolve_device
from tasks.corpora.manifest import read_manifest

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------- device and processes
@dataclass
class Runtime:
    """Where this process trains: its device, its rank among ``world_size`` processes, and autocast."""

    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """bf16 on a GPU that supports it; None (full fp32) on the CPU."""
        if self.device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None

    def autocast(self):
        dtype = self.autocast_dtype
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def setup_runtime(device: str | None = None) -> Runtime:
    """Pick the device and, under ``torchrun`` (``WORLD_SIZE`` > 1), join the process group
    (NCCL on GPUs, gloo on the CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch_device = torch.device(resolve_device(device))
    if torch_device.type == "cuda" and world_size > 1:
        torch_device = torch.device("cuda", local_rank)
        torch.cuda.set_device(torch_device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch_device.type == "cuda" else "gloo")
    return Runtime(torch_device, rank, world_size)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------- schedule
def warmup_linear_decay(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor: linear warm-up to 1 over ``warmup`` steps, then linear decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


# ---------------------------------------------------------------------- resumable state
def save_state(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write a training state (tensors, numbers, strings, lists, dicts only) atomically."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """Read a training state written by :func:`save_state`, or None if there is none.

    ``weights_only=True``: a state file can hold tensors and plain containers, never code.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # an unreadable state is not silently replaced: the user decides
        raise ValueError(f"{path}: cannot read the training state ({err}); delete it to start over") from err


# ---------------------------------------------------------------------- audio
def training_wavs(corpus: str | os.PathLike, tasks: tuple[str, ...] = ("asr", "slu", "words")) -> list[str]:
    """Distinct wav paths of the train split of ``tasks`` in a prepared corpus (missing tasks are skipped).

    Read them with :mod:`tasks.audio` (``load_audio``, ``load_audio_window``), the one audio reader."""
    paths: dict[str, None] = {}
    for task in tasks:
        try:
            frame = read_manifest(corpus, task, "train")
        except ValueError:
            continue
        paths.update(dict.fromkeys(frame["wav_path"]))
    if not paths:
        raise ValueError(f"{corpus}: no train manifests for {', '.join(tasks)}; prepare the corpus first")
    return list(paths)


def span_mask(
    batch: int, frames: int, mask_prob: float, span: int, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """HuBERT / wav2vec 2.0 span masking: about ``mask_prob * frames / span`` random starts per item,
    each masking ``span`` frames (spans may overlap). Returns ``[batch, frames]`` bool."""
    num_spans = max(1, int(mask_prob * frames / span + torch.rand((), generator=generator).item()))
    num_spans = min(num_spans, max(1, frames - span + 1))
    mask = torch.zeros(batch, frames, dtype=torch.bool)
    for b in range(batch):
        starts = torch.randperm(max(1, frames - span + 1), generator=generator)[:num_spans]
        idx = (starts[:, None] + torch.arange(span)[None, :]).clamp(max=frames - 1).flatten()
        mask[b, idx] = True
    return mask.to(device)


def frames_for(num_samples: int, receptive_field: int = 400, stride: int = 320) -> int:
    """Frames a 320x conv extractor makes from ``num_samples``."""
    return 0 if num_samples < receptive_field else (num_samples - receptive_field) // stride + 1


def lr_factor_fn(total: int, warmup_fraction: float):
    warmup = max(1, math.floor(total * warmup_fraction))
    return lambda step: warmup_linear_decay(step, total, warmup)


