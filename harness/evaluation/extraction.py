"""Filling a feature cache entry: the upstream over batches of audio, written chunk by chunk.

:func:`extracted_frames` runs the frozen upstream over duration-bounded batches (autocast at the
spec's precision) and yields each utterance's frames; the writers (:data:`WRITERS`) stream them
into a partial entry in chunks that :class:`Progress` fsyncs and lists with their SHA-256, so a
killed extraction resumes from its last verified chunk; :func:`join_parts` joins the parts that
the ranks of a ``torchrun`` launch wrote. The cache itself (keys, locks, publishing) is
:mod:`harness.evaluation.cache`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from core.files import write_json
from harness.evaluation.entries import (
    EXTRACT_DTYPES,
    FORMAT_VERSION,
    FeatureSet,
    UpstreamSpec,
    frame_means,
    remove_entry_dir,
)
from tasks.audio import load_audio

logger = logging.getLogger(__name__)


@dataclass
class EntryShape:
    """The upstream's shape, known once its first batch has run."""

    layers: int = 0
    dim: int = 0
    stride: int = 0

    @classmethod
    def of(cls, entry: FeatureSet) -> EntryShape:
        return cls(entry.num_layers, entry.hidden_size, entry.downsample_rate)


@torch.no_grad()
def extracted_frames(
    spec: UpstreamSpec,
    utterances: dict[str, tuple[str, float]],
    upstream: torch.nn.Module,
    device: str,
    batch_seconds: float,
    description: str,
    shape: EntryShape,
) -> Iterator[tuple[str, np.ndarray]]:
    """Run the upstream over length-sorted batches; yields ``(audio identity, [frames, layers, dim]
    float16)`` per utterance and fills ``shape`` from the first batch."""
    upstream = upstream.to(device).eval()
    order = sorted(utterances, key=lambda k: (-utterances[k][1], k))  # longest first: memory peaks early
    batches = duration_batches([utterances[k][1] for k in order], batch_seconds)
    with tqdm(total=len(order), desc=f"extract {description}", unit="utt") as bar:
        for batch in batches:
            batch_keys = [order[i] for i in batch]
            hidden_states, frames = forward_batch(upstream, [load_audio(utterances[k][0]) for k in batch_keys], device,
                                                  spec.dtype)  # fmt: skip
            if not shape.layers:
                shape.layers, shape.dim, shape.stride = check_shapes(spec.name, upstream, hidden_states)
            stacked = torch.stack([h.float() for h in hidden_states], dim=2).to(torch.float16).cpu()  # [B, T, L, D]
            for b, key in enumerate(batch_keys):
                yield key, stacked[b, : int(frames[b])].numpy()
            bar.update(len(batch))


def forward_batch(
    upstream: torch.nn.Module, wavs: Sequence[torch.Tensor], device: str, dtype: str
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """One padded batch of waveforms through an s3prl-style upstream under the extraction precision's
    autocast (``dtype``, a key of :data:`EXTRACT_DTYPES`): its hidden states and their valid frame
    counts (CPU, long). Cached and online extraction both run the upstream through here."""
    lengths = torch.tensor([len(w) for w in wavs])
    padded = torch.nn.utils.rnn.pad_sequence(list(wavs), batch_first=True).to(device)
    autocast_dtype = EXTRACT_DTYPES[dtype]
    autocast = (
        torch.autocast(device_type=torch.device(device).type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else contextlib.nullcontext()
    )
    with autocast:
        hidden_states, hidden_lens = upstream(padded, lengths.to(device))
    return hidden_states, hidden_lens[0].to("cpu", torch.long)


def frames_from_entry(entry: FeatureSet, utterances: dict[str, tuple[str, float]]) -> Iterator[tuple[str, np.ndarray]]:
    """The cached frames of ``utterances`` (all in ``entry``), as :func:`extracted_frames` yields them."""
    for key, row in zip(utterances, entry.rows(list(utterances)), strict=True):
        yield key, np.asarray(entry.get(int(row)))


#: A chunk is committed (fsynced, hashed, listed in progress.jsonl) once it holds this many bytes.
CHUNK_BYTES = 256 * 2**20


class Progress:
    """The verified chunks of a partial entry: what a resumed extraction need not compute again.

    ``progress.jsonl`` starts with a header (kind, shape) and lists one chunk per line: its audio
    keys, their frame counts, where the chunk ends in the data file (bytes for frames, rows for
    pooled means) and the SHA-256 of its bytes. A chunk is listed only after its bytes are fsynced;
    on resume every chunk is read back and checked, and the first one that fails (with all after
    it) is dropped and recomputed, never used.
    """

    NAME = "progress.jsonl"

    def __init__(self, directory: Path, kind: str) -> None:
        self.directory, self.kind, self.path = directory, kind, directory / self.NAME
        self.keys: list[str] = []
        self.lengths: list[int] = []
        self.end = 0
        self.shape: EntryShape | None = None

    @property
    def done(self) -> set[str]:
        return set(self.keys)

    @classmethod
    def resume(cls, directory: Path, kind: str) -> Progress:
        """The verified progress of ``directory`` (created empty when there is none)."""
        progress = cls(directory, kind)
        lines = []
        if progress.path.is_file():
            for line in progress.path.read_text(encoding="utf-8").splitlines():
                try:
                    lines.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a line cut by a kill: its chunk was never complete
        if not lines or lines[0].get("kind") != kind:
            remove_entry_dir(directory)
            directory.mkdir(parents=True)
            return progress
        progress.shape = EntryShape(*lines[0]["shape"])
        good = [lines[0]]
        for number, chunk in enumerate(lines[1:], 1):
            if _chunk_digest(directory, kind, progress.shape, progress.end, chunk["end"]) != chunk["sha256"]:
                logger.warning("%s: chunk %d fails its check; it and what follows are recomputed", directory, number)
                break
            progress.keys += chunk["keys"]
            progress.lengths += chunk["lengths"]
            progress.end = chunk["end"]
            good.append(chunk)
        progress.path.write_text("".join(json.dumps(line) + "\n" for line in good), encoding="utf-8")
        return progress

    def commit(self, keys: list[str], lengths: list[int], end: int, sha256: str, shape: EntryShape) -> None:
        """List a chunk whose bytes are on disk (fsynced by the caller)."""
        with open(self.path, "a", encoding="utf-8") as out:
            if self.shape is None:
                self.shape = shape
                out.write(json.dumps({"kind": self.kind, "shape": [shape.layers, shape.dim, shape.stride]}) + "\n")
            out.write(json.dumps({"keys": keys, "lengths": lengths, "end": end, "sha256": sha256}) + "\n")
            out.flush()
            os.fsync(out.fileno())
        self.keys += keys
        self.lengths += lengths
        self.end = end


def join_parts(out: Path, kind: str, parts: list[Path], spec: UpstreamSpec, device: str) -> None:
    """One entry in ``out`` from the complete parts the ranks wrote, in rank order."""
    remove_entry_dir(out)
    out.mkdir(parents=True)
    metas = [json.loads((part / "meta.json").read_text(encoding="utf-8")) for part in parts]
    filled = [(part, meta) for part, meta in zip(parts, metas, strict=True) if meta["utterances"]]
    first = filled[0][1]
    shape = EntryShape(first["num_layers"], first["hidden_size"], first["downsample_rate"])
    keys = [key for part, _ in filled for key in json.loads((part / "keys.json").read_text(encoding="utf-8"))]
    if kind == "frames":
        lengths = np.concatenate([np.diff(np.load(part / "offsets.npy")) for part, _ in filled])
        with open(out / "features.f16", "wb") as joined:
            for part, _ in filled:
                with open(part / "features.f16", "rb") as piece:
                    shutil.copyfileobj(piece, joined, 16 * 2**20)
            joined.flush()
            os.fsync(joined.fileno())
        np.save(out / "offsets.npy", np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
        extra = {"total_frames": int(lengths.sum()), "dtype": "float16"}
    else:
        lengths = np.concatenate([np.load(part / "lengths.npy") for part, _ in filled])
        means = np.lib.format.open_memmap(out / "means.npy", mode="w+", dtype=np.float32, shape=(len(keys), shape.layers, shape.dim))
        row = 0
        for part, _ in filled:
            piece = np.load(part / "means.npy", mmap_mode="r")
            means[row : row + len(piece)] = piece
            row += len(piece)
        means.flush()
        np.save(out / "lengths.npy", lengths.astype(np.int64))
        extra = {"total_frames": int(lengths.sum()), "dtype": "float32"}
    write_json(out / "keys.json", keys)
    write_json(out / "meta.json", {**_meta(spec, shape, device, len(keys)), "kind": kind, **extra, "parts": len(parts)})


def _chunk_digest(directory: Path, kind: str, shape: EntryShape, start: int, end: int) -> str | None:
    """SHA-256 of the bytes of a chunk as they are on disk; None when they are not all there."""
    try:
        if kind == "frames":
            with open(directory / "features.f16", "rb") as data:
                data.seek(start)
                chunk = data.read(end - start)
            return hashlib.sha256(chunk).hexdigest() if len(chunk) == end - start else None
        means = np.load(directory / "means.npy", mmap_mode="r")
        return hashlib.sha256(np.ascontiguousarray(means[start:end]).tobytes()).hexdigest() if end <= len(means) else None
    except (OSError, ValueError):
        return None


def _write_frames(
    directory: Path, items: Iterator[tuple[str, np.ndarray]], shape: EntryShape, spec: UpstreamSpec, device: str, total: int,
    progress: Progress,
) -> dict[str, Any]:
    """Append float16 frames to ``features.f16`` after the verified chunks, committing every
    :data:`CHUNK_BYTES`; returns the entry's meta."""
    path = directory / "features.f16"
    with open(path, "r+b" if path.exists() else "wb") as out:
        out.truncate(progress.end)
        out.seek(progress.end)
        keys, lengths, digest = [], [], hashlib.sha256()

        def commit() -> None:
            out.flush()
            os.fsync(out.fileno())
            progress.commit(keys[:], lengths[:], out.tell(), digest.hexdigest(), shape)
            keys.clear()
            lengths.clear()

        for key, frames in items:
            data = np.ascontiguousarray(frames).tobytes()
            out.write(data)
            digest.update(data)
            keys.append(key)
            lengths.append(len(frames))
            if out.tell() - progress.end >= CHUNK_BYTES:
                commit()
                digest = hashlib.sha256()
        if keys:
            commit()
    offsets = np.concatenate([[0], np.cumsum(progress.lengths)]).astype(np.int64)
    np.save(directory / "offsets.npy", offsets)
    write_json(directory / "keys.json", progress.keys)
    return {**_meta(spec, shape, device, len(progress.keys)), "kind": "frames", "total_frames": int(offsets[-1]),
            "dtype": "float16"}  # fmt: skip


def _write_pooled(
    directory: Path, items: Iterator[tuple[str, np.ndarray]], shape: EntryShape, spec: UpstreamSpec, device: str, total: int,
    progress: Progress,
) -> dict[str, Any]:
    """Each utterance's per-layer mean frame into ``means.npy`` (a float32 memmap filled in place),
    after the verified chunks, committing every :data:`CHUNK_BYTES`."""
    path = directory / "means.npy"
    means = np.lib.format.open_memmap(path, mode="r+") if progress.end else None
    keys, lengths, row = [], [], progress.end
    for key, frames in items:
        if means is None:  # the shape is known once the first batch has run
            means = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(total, shape.layers, shape.dim))
        means[row] = frame_means(frames)
        row += 1
        keys.append(key)
        lengths.append(len(frames))
        if (row - progress.end) * shape.layers * shape.dim * 4 >= CHUNK_BYTES:
            _commit_rows(means, path, progress, keys, lengths, row, shape)
            keys, lengths = [], []
    if keys:
        _commit_rows(means, path, progress, keys, lengths, row, shape)
    if len(progress.keys) != total:
        raise RuntimeError(f"pooled entry {directory}: {len(progress.keys)} of {total} utterances came back from extraction")
    np.save(directory / "lengths.npy", np.asarray(progress.lengths, dtype=np.int64))
    write_json(directory / "keys.json", progress.keys)
    return {**_meta(spec, shape, device, len(progress.keys)), "kind": "pooled", "total_frames": int(sum(progress.lengths)),
            "dtype": "float32"}  # fmt: skip


def _commit_rows(means: np.memmap, path: Path, progress: Progress, keys: list, lengths: list, row: int, shape: EntryShape) -> None:
    """Flush and fsync the pooled rows written since the last chunk, then list them as a chunk."""
    means.flush()
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())
    digest = hashlib.sha256(np.ascontiguousarray(means[progress.end : row]).tobytes()).hexdigest()
    progress.commit(keys, lengths, row, digest, shape)


WRITERS = {"frames": _write_frames, "pooled": _write_pooled}


def _meta(spec: UpstreamSpec, shape: EntryShape, device: str, utterances: int) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "upstream": {**asdict(spec)},
        "num_layers": shape.layers,
        "hidden_size": shape.dim,
        "downsample_rate": shape.stride,
        "utterances": utterances,
        "device": device,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


@torch.no_grad()
def probe_shape(upstream: torch.nn.Module, device: str = "cpu") -> tuple[int, int, int]:
    """(layers, dim, stride) of an s3prl-style upstream, from one forward over one second of noise."""
    upstream = upstream.to(device).eval()
    wav = 0.1 * torch.randn(1, 16000, generator=torch.Generator().manual_seed(0)).to(device)
    hidden_states, _ = upstream(wav, torch.tensor([16000], device=device))
    return check_shapes("upstream", upstream, hidden_states)


def check_shapes(name: str, upstream: torch.nn.Module, hidden_states: list[torch.Tensor]) -> tuple[int, int, int]:
    widths = {h.shape[-1] for h in hidden_states}
    rates = getattr(upstream, "downsample_rates", None) or [getattr(upstream, "downsample_rate", 320)]
    if len(widths) != 1 or len(set(rates)) != 1:
        raise ValueError(
            f"upstream {name!r} has layers of widths {sorted(widths)} and strides {sorted(set(rates))}; "
            "the learned weighted sum (s3prl Featurizer) needs one width and one stride"
        )
    return len(hidden_states), widths.pop(), int(rates[0])


def duration_batches(durations: Sequence[float], batch_seconds: float, max_batch: int = 64) -> list[list[int]]:
    """Consecutive batches whose padded length (size x longest) stays within ``batch_seconds``."""
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0.0
    for i, duration in enumerate(durations):
        if current and (max(longest, duration) * (len(current) + 1) > batch_seconds or len(current) >= max_batch):
            batches.append(current)
            current, longest = [], 0.0
        current.append(i)
        longest = max(longest, duration)
    if current:
        batches.append(current)
    return batches
