"""Batch samplers: which utterances go into each training batch, in what order, cropped how.

Three samplers, for three kinds of training, each drawing exactly as the runs it made drew (the
embedded teachers, the published records and the fine-tuning reports were made with them, and a
resumed run must draw what an uninterrupted one would):

- :class:`BucketedBatches`: downstream heads and fine-tuning. Batches of ``batch_size`` utterances
  of similar length (sorted with +-10 % jitter each epoch), whole utterances, from a caller's
  generator; its position can be saved.
- :func:`bucketed_batches`: distillation (DPHuBERT, distill, the hybrid). Batches bounded in
  samples, cropped to their shortest item, aligned to the frame stride; batch ``n`` is a function
  of ``(seed, n)`` alone, so a run resumes from a batch count and ranks of ``torchrun`` share an epoch.
- :func:`crop_batches`: HuBERT pretraining. Random batches of a fixed count with replacement,
  cropped to their shortest item (at most ``max_samples``), aligned to the frame stride.

The crop both cropping samplers share is :func:`aligned_crops`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np


def aligned_crops(
    items, lengths: list[int], size: int, frame_stride: int, rng: np.random.Generator
) -> list[tuple[int, int, int]]:
    """``(item, start_sample, size)`` per item: a random start aligned to ``frame_stride``, so frame
    labels line up with the crop (one draw from ``rng`` per item, in order)."""
    batch = []
    for i in items:
        room = (lengths[i] - size) // frame_stride
        batch.append((int(i), int(rng.integers(room + 1)) * frame_stride, size))
    return batch


class BucketedBatches:
    """Endless training batches: each epoch sorts by length with +-10% jitter, chunks, shuffles the chunks.

    An iterator whose position can be saved (:meth:`state_dict`) and restored: with the state of
    ``rng`` saved beside it, a resumed run draws the batches an uninterrupted one would. ``rng`` is
    drawn from only when an epoch starts (the jitter, then the chunk order), so a caller may share it.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> None:
        self.lengths, self.batch_size, self.rng = np.asarray(lengths), batch_size, rng
        self.chunks: list[list[int]] = []
        self.order: list[int] = []
        self.position = 0

    def __iter__(self) -> BucketedBatches:
        return self

    def __next__(self) -> list[int]:
        if self.position >= len(self.order):  # a new epoch
            jittered = self.lengths * self.rng.uniform(0.9, 1.1, size=len(self.lengths))
            order = np.argsort(jittered, kind="stable")
            self.chunks = [order[i : i + self.batch_size].tolist() for i in range(0, len(order), self.batch_size)]
            self.order, self.position = self.rng.permutation(len(self.chunks)).tolist(), 0
        self.position += 1
        return self.chunks[self.order[self.position - 1]]

    def state_dict(self) -> dict[str, Any]:
        """The current epoch's chunks, their order and how many were taken (plain lists and ints)."""
        return {"chunks": self.chunks, "order": self.order, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.chunks, self.order, self.position = state["chunks"], state["order"], state["position"]


def bucketed_batches(
    lengths: list[int],
    max_batch_samples: int,
    max_crop_samples: int,
    frame_stride: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    start: int = 0,
) -> Iterator[list[tuple[int, int, int]]]:
    """Endless length-bucketed batches of ``(item, start_sample, num_samples)`` for one process.

    Every epoch sorts the items by length (equal lengths in a random order) and cuts the sorted
    list into batches of at most ``max_batch_samples`` samples once each item is cropped to the
    batch's shortest item (at most ``max_crop_samples``; crop starts aligned to ``frame_stride``);
    the batch order is shuffled. Process ``rank`` of ``world_size`` takes every ``world_size``-th
    batch, so all processes get as many batches. Batch ``n`` of a process is a function of
    ``(seed, n)`` alone: ``start`` (batches this process already used) resumes exactly.
    """
    if max_batch_samples < 1 or max_crop_samples < 1 or not lengths:
        raise ValueError("bucketed_batches needs items, max_batch_samples >= 1 and max_crop_samples >= 1")
    ordered = sorted(lengths)
    bounds, first = [], 0  # batch boundaries in the sorted order: the same in every epoch
    while first < len(ordered):
        crop = min(max_crop_samples, ordered[first])
        size = max(1, min(len(ordered) - first, max_batch_samples // crop))
        bounds.append((first, first + size))
        first += size
    per_process = len(bounds) // world_size
    if per_process == 0:
        raise ValueError(f"{len(bounds)} batches per epoch cannot be shared by {world_size} processes")
    epoch, plan = -1, []
    index = start
    while True:
        if index // per_process != epoch:
            epoch = index // per_process
            rng = np.random.default_rng([seed, epoch])
            order = sorted(rng.permutation(len(lengths)).tolist(), key=lambda i: lengths[i])
            plan = [order[a:b] for a, b in bounds]
            plan = [plan[i] for i in rng.permutation(len(plan))]
        items = plan[(index % per_process) * world_size + rank]
        size = min(max_crop_samples, min(lengths[i] for i in items))
        yield aligned_crops(items, lengths, size, frame_stride, np.random.default_rng([seed, epoch, index, rank]))
        index += 1


def crop_batches(
    num_items: int, lengths: list[int], batch_size: int, max_samples: int, frame_stride: int, rng: np.random.Generator
) -> Iterator[list[tuple[int, int, int]]]:
    """Endless random batches of ``(item, start_sample, num_samples)``: each batch is cropped to its
    shortest item (at most ``max_samples``), starts aligned to ``frame_stride`` so frame labels line up."""
    while True:
        items = rng.choice(num_items, size=batch_size, replace=num_items < batch_size)
        size = min(max_samples, min(lengths[i] for i in items))
        yield aligned_crops(items, lengths, size, frame_stride, rng)
