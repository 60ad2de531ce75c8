"""The feature cache's entries, as they lie on disk, and the identity that keys them.

The upstream is frozen in SUPERB, so its hidden states depend only on (upstream, checkpoint,
audio). They are computed once per set of utterances and reused by every task that reads the same
audio, every epoch and every learning rate.

An entry is a directory ``ROOT/features/<key[:2]>/<key>/`` of one of two kinds. A ``frames``
entry (what frame-level tasks train on) holds::

    features.f16   raw float16, C order, shape [total_frames, layers, dim] (see meta.json)
    offsets.npy    int64 [utterances + 1]: utterance i is rows offsets[i]:offsets[i+1]
    keys.json      the audio identity of each utterance, in storage order
    meta.json      shape, stride, upstream identity, timings; written last

An entry's key hashes the upstream identity (:class:`UpstreamSpec`: name, checkpoint SHA-256,
extraction precision, format version), the entry's kind and the *set* of audio identities
(:func:`tasks.corpora.checksums.audio_identity`); see :func:`entry_key`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT_VERSION = 2  # 2: frames past a shorter item's length repeat its last valid frame


EXTRACT_DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class UpstreamSpec:
    """Everything that determines an upstream's hidden states (besides the audio).

    Attributes:
        name: the s3prl hub entry (``hubert``, ``fbank``, ``pruned_hubert``, ...).
        ckpt: checkpoint path or URL given to the entry, or ``None``.
        ckpt_sha256: content hash of ``ckpt`` (see :func:`upstreams.identity.checkpoint_hash`).
        dtype: autocast precision of the extraction forward (``float32`` = none).
    """

    name: str
    ckpt: str | None = None
    ckpt_sha256: str | None = None
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.dtype not in EXTRACT_DTYPES:
            raise ValueError(f"unknown extraction dtype {self.dtype!r}; choose one of {', '.join(EXTRACT_DTYPES)}")

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "ckpt_sha256": self.ckpt_sha256, "dtype": self.dtype, "format": FORMAT_VERSION}

    def key(self) -> str:
        return hash_json(self.identity())


#: What a cache entry holds: every frame of every layer, or per utterance each layer's mean frame.
ENTRY_KINDS = ("frames", "pooled")


def entry_key(spec: UpstreamSpec, identities: Sequence[str], kind: str = "frames") -> str:
    """Cache key of (upstream, set of audio, kind); a frames key is the same as before kinds existed."""
    if kind not in ENTRY_KINDS:
        raise ValueError(f"unknown feature entry kind {kind!r}; choose one of {', '.join(ENTRY_KINDS)}")
    identity = {"upstream": spec.identity(), "audio": sorted(set(identities))}
    if kind != "frames":
        identity["kind"] = kind
    return hash_json(identity)


class _Entry:
    """What every kind of cache entry shares: its meta (the upstream's shape) and its audio keys."""

    kind: str

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
        self.num_layers = int(self.meta["num_layers"])
        self.hidden_size = int(self.meta["hidden_size"])
        self.downsample_rate = int(self.meta["downsample_rate"])
        self.keys: list[str] = json.loads((directory / "keys.json").read_text(encoding="utf-8"))
        self._row = {key: i for i, key in enumerate(self.keys)}

    def __len__(self) -> int:
        return len(self.keys)

    def rows(self, identities: Sequence[str]) -> np.ndarray:
        """Storage rows of the given audio identities (raises KeyError on a stranger)."""
        return np.array([self._row[key] for key in identities], dtype=np.int64)


class FeatureSet(_Entry):
    """Read-only view of one frames entry: all layers of every utterance, memory-mapped.

    Attributes:
        num_layers, hidden_size, downsample_rate: the upstream's shape (for s3prl's Featurizer).
        lengths: ``[utterances]`` frames per utterance, in storage order.
    """

    kind = "frames"

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.offsets = np.load(directory / "offsets.npy")
        self.lengths = np.diff(self.offsets)
        total = int(self.meta["total_frames"])
        expected_bytes = total * self.num_layers * self.hidden_size * 2
        actual_bytes = (directory / "features.f16").stat().st_size
        if actual_bytes != expected_bytes or len(self.keys) + 1 != len(self.offsets) or self.offsets[-1] != total:
            raise ValueError(f"{directory}: inconsistent cache entry ({actual_bytes} bytes, expected {expected_bytes})")
        self.features = np.memmap(
            directory / "features.f16", dtype=np.float16, mode="r", shape=(total, self.num_layers, self.hidden_size)
        )

    def get(self, row: int) -> np.ndarray:
        """``[frames, layers, dim]`` float16 view of one utterance."""
        return self.features[self.offsets[row] : self.offsets[row + 1]]


class PooledSet(_Entry):
    """Read-only view of one pooled entry: per utterance, each layer's mean over its valid frames.

    s3prl's Featurizer (a weighted sum of layers), a linear projection and the mean over valid frames
    are all linear, so a head that is linear up to its mean pooling gives the same logits from these
    means as from the frames (:meth:`harness.evaluation.engine.DownstreamModel.forward`). Same attributes and
    ``rows`` as :class:`FeatureSet`; :meth:`get` returns ``[layers, dim]``.
    """

    kind = "pooled"

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.lengths = np.load(directory / "lengths.npy")
        self.means = np.load(directory / "means.npy", mmap_mode="r")
        expected = (len(self.keys), self.num_layers, self.hidden_size)
        if self.means.shape != expected or self.means.dtype != np.float32 or self.lengths.shape != (len(self.keys),):
            raise ValueError(
                f"{directory}: inconsistent pooled entry (means {self.means.shape} {self.means.dtype}, "
                f"expected {expected} float32; {len(self.lengths)} lengths for {len(self.keys)} utterances)"
            )

    def get(self, row: int) -> np.ndarray:
        """``[layers, dim]`` float32 means of one utterance."""
        return self.means[row]


class LayerPrefix:
    """The first ``num_layers`` hidden states of another upstream's entry, read in place.

    A model cut to its first K transformer layers (convexity pruning) computes exactly the first
    K + 1 hidden states of the model it was cut from (post-LN encoders; see
    :func:`harness.evaluation.engine.prefix_parent`), so its features are a slice of the parent's cached
    ones and need no extraction. Same attributes, ``rows`` and ``get`` as the wrapped entry.
    """

    def __init__(self, entry: FeatureSet | PooledSet, num_layers: int) -> None:
        if not 1 <= num_layers <= entry.num_layers:
            raise ValueError(f"{entry.directory}: holds {entry.num_layers} hidden states, not the {num_layers} asked for")
        self.entry, self.num_layers = entry, num_layers
        self.kind, self.directory, self.keys, self.lengths = entry.kind, entry.directory, entry.keys, entry.lengths
        self.hidden_size, self.downsample_rate = entry.hidden_size, entry.downsample_rate

    def __len__(self) -> int:
        return len(self.entry)

    def rows(self, identities: Sequence[str]) -> np.ndarray:
        return self.entry.rows(identities)

    def get(self, row: int) -> np.ndarray:
        return self.entry.get(row)[..., : self.num_layers, :]


def frame_means(frames: np.ndarray) -> np.ndarray:
    """``[frames, layers, dim]`` float16 -> ``[layers, dim]`` float32: what a pooled entry stores."""
    return frames.astype(np.float32).mean(axis=0)


def hash_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def remove_entry_dir(directory: Path) -> None:
    """Remove a directory tree; renamed aside first so a reader never sees it half-deleted."""
    if not directory.exists():
        return
    aside = directory.parent / f".trash-{directory.name}-{uuid.uuid4().hex[:8]}"
    with contextlib.suppress(OSError):
        os.rename(directory, aside)
        directory = aside
    shutil.rmtree(directory, ignore_errors=True)
