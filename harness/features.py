"""The frozen-feature cache: every layer's hidden states, computed once and memory-mapped.

The upstream is frozen in SUPERB, so its hidden states depend only on (upstream, checkpoint,
audio). They are computed once per set of utterances and reused by every task that reads the same
audio, every epoch and every learning rate.

An entry is a directory ``ROOT/features/<key[:2]>/<key>/`` of one of two kinds. A ``frames``
entry (what frame-level tasks train on) holds::

    features.f16   raw float16, C order, shape [total_frames, layers, dim] (see meta.json)
    offsets.npy    int64 [utterances + 1]: utterance i is rows offsets[i]:offsets[i+1]
    keys.json      the audio identity of each utterance, in storage order
    meta.json      shape, stride, upstream identity, timings; written last

A ``pooled`` entry (what utterance-level tasks with a head linear up to its mean pooling train on,
see :class:`PooledSet`) holds, instead of the frames, each layer's mean over the utterance's frames::

    means.npy      float32 [utterances, layers, dim]: the mean of the float16 frames a frames entry holds
    lengths.npy    int64 [utterances]: frames per utterance (batches are cut by length as for frames)
    keys.json, meta.json as above

It takes ``layers x dim x 4`` bytes per utterance whatever its length (40 KB for HuBERT Base),
against ``layers x dim x 2`` bytes per frame; it is computed from the frames entry of the same audio
when one exists, else by running the upstream without keeping the frames.

The key hashes the upstream identity (name, checkpoint SHA-256, extraction precision, format
version), the entry's kind (for pooled entries) and the *set* of audio identities, where an audio identity is the file's SHA-256 from the
corpus' ``checksums.sha256`` when it has one, else ``path|size|mtime``. Task names do not enter
the key, so ASR, PR and SID share an entry when their manifests list the same audio.

An entry is filled in its partial sibling ``.partial-<key>/`` and renamed into place only when
complete, so a crash never leaves a partial entry under a real key. One process fills an entry at a
time (a file lock beside it; the others wait, then read it). The partial directory is written in
chunks (:class:`Progress`): every :data:`CHUNK_BYTES` the data is fsynced and the chunk listed with
its SHA-256, so a killed extraction resumes from its last verified chunk, streams to disk and
never holds a whole entry in memory; a chunk that fails its check is recomputed, never used. An
entry that fails its size checks (e.g. copied half-way by hand) is ignored, moved aside and
recomputed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock
from tqdm import tqdm

from core.files import naming_write_failures, sha256_file, sha256_tree, write_json
from tasks.audio import load_audio
from tasks.corpora.manifest import CHECKSUMS
from upstreams.checkpoint import CONFIG_NAME, WEIGHTS_NAME  # compact and transformers directories alike
from upstreams.importers import check_local_path

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: frames past a shorter item's length repeat its last valid frame
EXTRACT_DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class UpstreamSpec:
    """Everything that determines an upstream's hidden states (besides the audio).

    Attributes:
        name: the s3prl hub entry (``hubert``, ``fbank``, ``pruned_hubert``, ...).
        ckpt: checkpoint path or URL given to the entry, or ``None``.
        ckpt_sha256: content hash of ``ckpt`` (see :func:`checkpoint_hash`).
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
        return _hash_json(self.identity())


def checkpoint_hash(ckpt: str | os.PathLike | None) -> str | None:
    """Content identity of a checkpoint: SHA-256 of a file, or of every file under a directory
    (Hugging Face / compact style). A source that is not a local path (``preset:NAME``,
    ``torchaudio:BUNDLE``, a URL, a hub name ``org/name``) is identified by its text. ``None`` stays
    ``None``.

    Raises:
        FileNotFoundError: ``ckpt`` looks like a local path (or a checkpoint file name) but is missing.
    """
    if ckpt is None:
        return None
    path = Path(ckpt).expanduser()
    if path.is_file():
        return sha256_file(path)
    if path.is_dir():
        if (path / WEIGHTS_NAME).is_file() and (path / CONFIG_NAME).is_file():
            # a compact (or transformers) checkpoint: the weights and the architecture define it; files
            # written beside them later (cost.json, convexity.json, plots) do not change its identity
            digest = hashlib.sha256()
            for name in (CONFIG_NAME, WEIGHTS_NAME):
                digest.update(bytes.fromhex(sha256_file(path / name)))
            return digest.hexdigest()
        return sha256_tree(path)
    check_local_path(str(ckpt), "--ckpt")
    return "name:" + hashlib.sha256(str(ckpt).encode()).hexdigest()


def read_checksums(corpus_root: str | os.PathLike) -> dict[str, str]:
    """Absolute wav path -> SHA-256 from ``ROOT/checksums.sha256`` (empty when the corpus has none)."""
    root = Path(corpus_root)
    table: dict[str, str] = {}
    path = root / CHECKSUMS
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                digest, name = line.split(maxsplit=1)
                table[str((root / name.lstrip("*")).resolve())] = digest
    return table


def audio_identity(wav_path: str | os.PathLike, checksums: dict[str, str]) -> str:
    """Content hash when known, else ``path|size|mtime_ns`` (cheap, and changes when the file does)."""
    path = Path(wav_path).resolve()
    if str(path) in checksums:
        return "sha256:" + checksums[str(path)]
    stat = path.stat()
    return f"file:{path}|{stat.st_size}|{stat.st_mtime_ns}"


#: What a cache entry holds: every frame of every layer, or per utterance each layer's mean frame.
ENTRY_KINDS = ("frames", "pooled")


def entry_key(spec: UpstreamSpec, identities: Sequence[str], kind: str = "frames") -> str:
    """Cache key of (upstream, set of audio, kind); a frames key is the same as before kinds existed."""
    if kind not in ENTRY_KINDS:
        raise ValueError(f"unknown feature entry kind {kind!r}; choose one of {', '.join(ENTRY_KINDS)}")
    identity = {"upstream": spec.identity(), "audio": sorted(set(identities))}
    if kind != "frames":
        identity["kind"] = kind
    return _hash_json(identity)


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
    means as from the frames (:meth:`harness.evaluate.DownstreamModel.forward`). Same attributes and
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
    :func:`harness.evaluate.prefix_parent`), so its features are a slice of the parent's cached
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


class FeatureCache:
    """The on-disk cache under ``root``; see the module docstring for the layout."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def entry_dir(self, key: str) -> Path:
        return self.root / "features" / key[:2] / key

    def has(self, key: str) -> bool:
        """Whether entry ``key`` is complete in the cache (its meta.json is written last)."""
        return (self.entry_dir(key) / "meta.json").is_file()

    def load(self, key: str, kind: str = "frames") -> FeatureSet | PooledSet | None:
        """The complete entry ``key`` (of ``kind``), or ``None``; a damaged entry is moved aside and logged."""
        directory = self.entry_dir(key)
        if not (directory / "meta.json").is_file():
            return None
        try:
            return PooledSet(directory) if kind == "pooled" else FeatureSet(directory)
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as err:
            logger.warning("ignoring damaged feature cache entry %s (%s); it will be recomputed", directory, err)
            _remove_dir(directory)
            return None

    def get_or_extract(
        self,
        spec: UpstreamSpec,
        wav_paths: Sequence[str],
        identities: Sequence[str],
        durations: Sequence[float],
        build_upstream: Callable[[], torch.nn.Module],
        device: str = "cpu",
        batch_seconds: float = 64.0,
        description: str = "",
        kind: str = "frames",
        rank: int = 0,
        world_size: int = 1,
    ) -> tuple[FeatureSet | PooledSet, float]:
        """Return the features of these utterances and the seconds spent extracting (0 on a hit).

        Under ``torchrun`` (``world_size`` > 1, every rank calling with the same utterances) each
        rank extracts every ``world_size``-th utterance into its own part, and rank 0 joins the
        parts into the entry (:meth:`_fill_shared`).

        ``kind`` is ``frames`` (a :class:`FeatureSet`) or ``pooled`` (a :class:`PooledSet`, made from
        the frames entry of the same audio when the cache has one). ``build_upstream`` is called only
        when the upstream must run; it returns an ``s3prl.nn.S3PRLUpstream``-like module
        ``forward(wavs [B, T], wavs_len [B]) -> (list of [B, T', D], list of [B])``.
        """
        key = entry_key(spec, identities, kind)
        found = self.load(key, kind)
        if found is not None:
            logger.info("features %s (%s): cache hit (%s)", description, kind, self.entry_dir(key))
            return found, 0.0
        if not identities:
            raise ValueError(f"features {description}: no utterances to extract")
        unique: dict[str, tuple[str, float]] = {}
        for path, identity, duration in zip(wav_paths, identities, durations, strict=True):
            unique.setdefault(identity, (path, float(duration)))
        start = time.perf_counter()
        final = self.entry_dir(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        self._clean_abandoned(final.parent)
        how = (build_upstream, device, batch_seconds, description)
        with naming_write_failures(final, hint="free some space there, or give another --cache"):
            if world_size > 1:
                self._fill_shared(key, kind, spec, unique, how, rank, world_size)
                found = self.load(key, kind)
            else:
                with FileLock(str(final.parent / f".{key}.lock")):  # one writer per entry; the others wait, then read it
                    found = self.load(key, kind)
                    if found is None:
                        self._write_partial(final.parent / f".partial-{key}", kind, spec, unique, how)
                        _publish(final.parent / f".partial-{key}", final)
                        found = self.load(key, kind)
        if found is None:
            raise RuntimeError(f"feature cache entry {final} vanished right after it was written")
        return found, time.perf_counter() - start

    def _write_partial(
        self, partial: Path, kind: str, spec: UpstreamSpec, unique: dict[str, tuple[str, float]], how: tuple,
        split: list[str] | None = None,
    ) -> None:
        """Write the entry of ``unique`` in ``partial``, resuming from its last verified chunk; a
        partial directory that is already complete (its meta.json written) is kept as it is. A
        pooled entry averages the cached frames entry of ``split`` (default: ``unique``) if there is one."""
        if (partial / "meta.json").is_file():
            return
        build_upstream, device, batch_seconds, description = how
        progress = Progress.resume(partial, kind)
        todo = {k: v for k, v in unique.items() if k not in progress.done}
        if progress.done:
            logger.info("features %s (%s): resuming after %d of %d utterances", description, kind, len(progress.done), len(unique))
        frames = self.load(entry_key(spec, split or list(unique))) if kind == "pooled" else None
        if frames is not None:
            logger.info("features %s (pooled): averaging the cached frames of %s", description, frames.directory)
            items, shape = _frames_from_entry(frames, todo), _Shape.of(frames)
        else:
            shape = progress.shape or _Shape()
            items = _extracted_frames(spec, todo, build_upstream(), device, batch_seconds, description, shape) if todo else iter(())
        meta = WRITERS[kind](partial, items, shape, spec, device, len(unique), progress)
        write_json(partial / "meta.json", meta)
        progress.path.unlink(missing_ok=True)

    def _fill_shared(self, key: str, kind: str, spec: UpstreamSpec, unique: dict, how: tuple, rank: int, world: int) -> None:
        """Rank ``rank`` of ``world`` writes every ``world``-th utterance into its part; rank 0
        joins the parts (in rank order: the order within an entry is free) and publishes it."""
        import torch.distributed as dist

        final = self.entry_dir(key)
        partial = final.parent / f".partial-{key}"
        share = dict(list(unique.items())[rank::world])
        self._write_partial(partial / f"rank-{rank}-of-{world}", kind, spec, share, how, split=list(unique))
        dist.barrier()
        if rank == 0:
            joined = partial / "joined"
            _join_parts(joined, kind, [partial / f"rank-{r}-of-{world}" for r in range(world)], spec, how[1])
            _publish(joined, final)
            _remove_dir(partial)
        dist.barrier()

    @staticmethod
    def _clean_abandoned(parent: Path) -> None:
        """Delete temporary entries left by dead processes of this host."""
        host = socket.gethostname()
        for tmp in parent.glob(".tmp-*"):
            parts = tmp.name.split("-")
            with contextlib.suppress(ValueError, IndexError):
                if "-".join(parts[2:-2]) == host and not _pid_alive(int(parts[-2])):
                    _remove_dir(tmp)

    def read_info(self, name: str) -> dict | None:
        """A small JSON side file (e.g. the upstream's cost), or ``None``."""
        path = self.root / "info" / f"{name}.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def write_info(self, name: str, info: dict) -> None:
        write_json(self.root / "info" / f"{name}.json", info)


@dataclass
class _Shape:
    """The upstream's shape, known once its first batch has run."""

    layers: int = 0
    dim: int = 0
    stride: int = 0

    @classmethod
    def of(cls, entry: FeatureSet) -> _Shape:
        return cls(entry.num_layers, entry.hidden_size, entry.downsample_rate)


@torch.no_grad()
def _extracted_frames(
    spec: UpstreamSpec,
    utterances: dict[str, tuple[str, float]],
    upstream: torch.nn.Module,
    device: str,
    batch_seconds: float,
    description: str,
    shape: _Shape,
) -> Iterator[tuple[str, np.ndarray]]:
    """Run the upstream over length-sorted batches; yields ``(audio identity, [frames, layers, dim]
    float16)`` per utterance and fills ``shape`` from the first batch."""
    upstream = upstream.to(device).eval()
    order = sorted(utterances, key=lambda k: (-utterances[k][1], k))  # longest first: memory peaks early
    batches = _duration_batches([utterances[k][1] for k in order], batch_seconds)
    with tqdm(total=len(order), desc=f"extract {description}", unit="utt") as bar:
        for batch in batches:
            batch_keys = [order[i] for i in batch]
            hidden_states, frames = forward_batch(upstream, [load_audio(utterances[k][0]) for k in batch_keys], device,
                                                  spec.dtype)  # fmt: skip
            if not shape.layers:
                shape.layers, shape.dim, shape.stride = _check_shapes(spec.name, upstream, hidden_states)
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


def _frames_from_entry(entry: FeatureSet, utterances: dict[str, tuple[str, float]]) -> Iterator[tuple[str, np.ndarray]]:
    """The cached frames of ``utterances`` (all in ``entry``), as :func:`_extracted_frames` yields them."""
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
        self.shape: _Shape | None = None

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
            _remove_dir(directory)
            directory.mkdir(parents=True)
            return progress
        progress.shape = _Shape(*lines[0]["shape"])
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

    def commit(self, keys: list[str], lengths: list[int], end: int, sha256: str, shape: _Shape) -> None:
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


def _publish(partial: Path, final: Path) -> None:
    """Rename a complete partial entry into place (replacing an unfinished one)."""
    if final.exists():
        logger.warning("replacing unfinished feature cache entry %s", final)
        _remove_dir(final)
    os.rename(partial, final)


def _join_parts(out: Path, kind: str, parts: list[Path], spec: UpstreamSpec, device: str) -> None:
    """One entry in ``out`` from the complete parts the ranks wrote, in rank order."""
    _remove_dir(out)
    out.mkdir(parents=True)
    metas = [json.loads((part / "meta.json").read_text(encoding="utf-8")) for part in parts]
    filled = [(part, meta) for part, meta in zip(parts, metas, strict=True) if meta["utterances"]]
    first = filled[0][1]
    shape = _Shape(first["num_layers"], first["hidden_size"], first["downsample_rate"])
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


def _chunk_digest(directory: Path, kind: str, shape: _Shape, start: int, end: int) -> str | None:
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
    directory: Path, items: Iterator[tuple[str, np.ndarray]], shape: _Shape, spec: UpstreamSpec, device: str, total: int,
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
    directory: Path, items: Iterator[tuple[str, np.ndarray]], shape: _Shape, spec: UpstreamSpec, device: str, total: int,
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


def _commit_rows(means: np.memmap, path: Path, progress: Progress, keys: list, lengths: list, row: int, shape: _Shape) -> None:
    """Flush and fsync the pooled rows written since the last chunk, then list them as a chunk."""
    means.flush()
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())
    digest = hashlib.sha256(np.ascontiguousarray(means[progress.end : row]).tobytes()).hexdigest()
    progress.commit(keys, lengths, row, digest, shape)


WRITERS = {"frames": _write_frames, "pooled": _write_pooled}


def _meta(spec: UpstreamSpec, shape: _Shape, device: str, utterances: int) -> dict[str, Any]:
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
    return _check_shapes("upstream", upstream, hidden_states)


def _check_shapes(name: str, upstream: torch.nn.Module, hidden_states: list[torch.Tensor]) -> tuple[int, int, int]:
    widths = {h.shape[-1] for h in hidden_states}
    rates = getattr(upstream, "downsample_rates", None) or [getattr(upstream, "downsample_rate", 320)]
    if len(widths) != 1 or len(set(rates)) != 1:
        raise ValueError(
            f"upstream {name!r} has layers of widths {sorted(widths)} and strides {sorted(set(rates))}; "
            "the learned weighted sum (s3prl Featurizer) needs one width and one stride"
        )
    return len(hidden_states), widths.pop(), int(rates[0])


def _duration_batches(durations: Sequence[float], batch_seconds: float, max_batch: int = 64) -> list[list[int]]:
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


def _hash_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_dir(directory: Path) -> None:
    """Remove a directory tree; renamed aside first so a reader never sees it half-deleted."""
    if not directory.exists():
        return
    aside = directory.parent / f".trash-{directory.name}-{uuid.uuid4().hex[:8]}"
    with contextlib.suppress(OSError):
        os.rename(directory, aside)
        directory = aside
    shutil.rmtree(directory, ignore_errors=True)
