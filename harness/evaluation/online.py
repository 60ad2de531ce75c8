"""Frames computed on demand: the frozen upstream runs inside the training loop when a split's frames
do not fit the cache budget (:mod:`harness.evaluation.plan`).

An :class:`OnlineSet` has the interface of :class:`harness.evaluation.cache.FeatureSet` that the engine
reads (``kind``, ``num_layers``, ``hidden_size``, ``downsample_rate``, ``lengths``, ``rows``) and
makes a batch with :meth:`OnlineSet.batch`: the upstream in eval mode without gradients, under the
extraction precision's autocast (``--extract-dtype``; bf16 is the choice on a GPU), its frames
rounded to float16 exactly as the cache stores them and zero past each utterance's length as
cached batches are padded, so a head sees the same numbers in both modes (up to the float noise of
batching). ``lengths`` are estimated from the manifest durations
(``duration x 16000 / stride``) and only order the length-bucketed batches; the frames a batch
returns come with the upstream's own lengths. The upstream runs on sub-batches of at most
``batch_seconds`` of padded audio (``--extract-batch-seconds``), as the cache's extraction does, so
its memory stays bounded whatever the head's batch. A training crop (``max_frames``) cuts the audio to
``max_frames x stride`` samples at a random frame-aligned start.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from core.audio import SAMPLE_RATE
from harness.evaluation.extraction import check_shapes, duration_batches, forward_batch
from tasks.audio import load_audio


class OnlineSet:
    """The utterances of one split, their frames made by ``upstream()`` when a batch asks for them."""

    kind = "online"

    def __init__(
        self,
        wav_paths: Sequence[str],
        identities: Sequence[str],
        durations: Sequence[float],
        upstream: Callable[[], torch.nn.Module],
        shape: tuple[int, int, int],
        dtype: str = "float32",
        batch_seconds: float = 64.0,
    ) -> None:
        unique: dict[str, tuple[str, float]] = {}
        for path, identity, duration in zip(wav_paths, identities, durations, strict=True):
            unique.setdefault(identity, (path, float(duration)))
        self.keys = list(unique)
        self.paths = [unique[key][0] for key in self.keys]
        self.num_layers, self.hidden_size, self.downsample_rate = shape
        self.lengths = np.array(
            [max(1, round(unique[key][1] * SAMPLE_RATE / self.downsample_rate)) for key in self.keys], dtype=np.int64
        )
        self.upstream = upstream
        self.dtype = dtype
        self.batch_seconds = batch_seconds
        self._row = {key: i for i, key in enumerate(self.keys)}

    def __len__(self) -> int:
        return len(self.keys)

    def rows(self, identities: Sequence[str]) -> np.ndarray:
        return np.array([self._row[key] for key in identities], dtype=np.int64)

    @torch.no_grad()
    def batch(
        self, rows: Sequence[int], device: str, max_frames: int | None = None, rng: np.random.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, T, layers, D]`` float32 frames (float16-rounded) and their lengths ``[B]``."""
        wavs = [load_audio(self.paths[row]) for row in rows]
        if max_frames is not None:
            limit = max_frames * self.downsample_rate
            for i, wav in enumerate(wavs):
                if len(wav) > limit:
                    room = (len(wav) - limit) // self.downsample_rate
                    start = (int(rng.integers(room + 1)) if rng is not None else 0) * self.downsample_rate
                    wavs[i] = wav[start : start + limit]
        module = self.upstream().to(device).eval()
        pieces, lengths = [None] * len(wavs), [0] * len(wavs)
        for group in duration_batches([len(w) / SAMPLE_RATE for w in wavs], self.batch_seconds):  # bounded memory
            states, frames = self._forward(module, [wavs[i] for i in group], device)
            for j, i in enumerate(group):
                pieces[i], lengths[i] = states[j, : frames[j]], int(frames[j])
        stacked = torch.zeros(len(wavs), max(lengths), *pieces[0].shape[1:])
        for i, piece in enumerate(pieces):
            stacked[i, : lengths[i]] = piece  # zero padding, as collate pads cached frames
        return stacked.to(torch.float16).float().to(device), torch.tensor(lengths, dtype=torch.long)

    def _forward(self, module: torch.nn.Module, wavs: list[torch.Tensor], device: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``[b, T, layers, D]`` float32 on the CPU and the frame counts of one padded sub-batch."""
        hidden_states, frames = forward_batch(module, wavs, device, self.dtype)
        check_shapes("online upstream", module, hidden_states)
        return torch.stack([h.float() for h in hidden_states], dim=2).cpu(), frames
