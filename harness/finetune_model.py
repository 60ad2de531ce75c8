"""What a model under fine-tuning reads and how it runs: waveform splits, padded batches, the
encoder with its task head, and batched prediction. The recipe that trains it is
:mod:`harness.finetune`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from harness import training
from tasks.audio import SAMPLE_RATE, load_audio
from tasks.base import Task
from tasks.corpora.manifest import ManifestError, read_manifest


@dataclass
class WaveSplit:
    """One split of a task: wav paths, lengths in samples, references, utterance ids, and train targets."""

    paths: list[str]
    samples: np.ndarray  # [utterances], from the manifest's durations (for bucketing)
    references: list
    ids: list[str] = field(default_factory=list)
    targets: list[Tensor] = field(default_factory=list)


def read_split(task: Task, corpus: str | os.PathLike, split: str) -> WaveSplit:
    manifest = task.manifest_for(corpus)
    frame = read_manifest(corpus, manifest, split)
    if frame.empty:
        raise ManifestError(f"{corpus}: manifest {manifest}/{split} has no rows")
    samples = np.round(frame["duration"].astype(float).to_numpy() * SAMPLE_RATE).astype(np.int64)
    return WaveSplit(list(frame["wav_path"]), samples, task.references(frame), [str(i) for i in frame["id"]])


def load_batch(
    data: WaveSplit, batch: list[int], max_samples: int | None = None, rng: np.random.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Read and pad a batch; with ``max_samples``, longer utterances are cropped (at random with ``rng``).

    Returns:
        (Tensor, Tensor): waveforms ``[B, samples]`` float32 and valid samples ``[B]``.
    """
    pieces = []
    for i in batch:
        wav = load_audio(data.paths[i])
        if max_samples is not None and len(wav) > max_samples:
            start = int(rng.integers(0, len(wav) - max_samples + 1)) if rng is not None else 0
            wav = wav[start : start + max_samples]
        pieces.append(wav)
    lengths = torch.tensor([len(p) for p in pieces], dtype=torch.long)
    return nn.utils.rnn.pad_sequence(pieces, batch_first=True), lengths


class EncoderWithHead(nn.Module):
    """A speech encoder and a task head on its last hidden state, trained together.

    Args:
        encoder: a ``SpeechEncoder``.
        head: ``forward(features [B, T, D], lengths [B]) -> output`` (a task's head).
        freeze_extractor: keep the CNN feature extractor's weights fixed.
    """

    def __init__(self, encoder: nn.Module, head: nn.Module, freeze_extractor: bool = True) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head
        if freeze_extractor:
            encoder.feature_extractor.requires_grad_(False)

    def forward(self, waveforms: Tensor, lengths: Tensor) -> tuple[Any, Tensor]:
        """``[B, samples]``, ``[B]`` -> (the head's output, valid frames ``[B]``)."""
        hidden, frame_lengths = self.encoder(waveforms, lengths)
        return self.head(self.encoder.last_hidden_state(hidden), frame_lengths), frame_lengths


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def predict(
    models: list[EncoderWithHead], task: Task, data: WaveSplit, batch_size: int, runtime: training.Runtime,
    warmup: bool = False,
) -> tuple[list[tuple[list, float]], float]:  # fmt: skip
    """Per model, its predictions in manifest order and its seconds of model work; and the seconds of audio.

    The models take each batch in turn (so that their times see the same load on the machine). With
    ``warmup`` each runs the first batch once untimed first (allocator and kernel start-up).
    """
    for model in models:
        model.eval()
    order = np.argsort(data.samples, kind="stable")
    predictions: list[list] = [[None] * len(order) for _ in models]
    seconds, audio = [0.0] * len(models), 0.0
    for index, start in enumerate(range(0, len(order), batch_size)):
        batch = order[start : start + batch_size].tolist()
        waveforms, lengths = load_batch(data, batch)
        waveforms, lengths = waveforms.to(runtime.device), lengths.to(runtime.device)
        for k in range(len(models)) if index % 2 == 0 else reversed(range(len(models))):
            if warmup and index == 0:
                with runtime.autocast():
                    models[k](waveforms, lengths)
            sync(runtime.device)
            began = time.perf_counter()
            with runtime.autocast():
                output, frame_lengths = models[k](waveforms, lengths)
            sync(runtime.device)
            seconds[k] += time.perf_counter() - began
            for i, prediction in zip(batch, task.decode(output, frame_lengths.cpu()), strict=True):
                predictions[k][i] = prediction
        audio += float(lengths.sum()) / SAMPLE_RATE
    return list(zip(predictions, seconds, strict=True)), audio
