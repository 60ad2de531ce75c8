"""The frozen-feature cache: every layer's hidden states, computed once and memory-mapped.

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


The entries' layout is described in :mod:`harness.evaluation.entries`, and how an entry is filled
(batched forward passes, resumable chunks, the pooled writer) in :mod:`harness.evaluation.extraction`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from filelock import FileLock

from core.files import naming_write_failures, write_json
from harness.evaluation.entries import FeatureSet, PooledSet, UpstreamSpec, entry_key, remove_entry_dir
from harness.evaluation.extraction import (
    WRITERS,
    EntryShape,
    Progress,
    extracted_frames,
    frames_from_entry,
    join_parts,
)

logger = logging.getLogger(__name__)


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
            remove_entry_dir(directory)
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
            items, shape = frames_from_entry(frames, todo), EntryShape.of(frames)
        else:
            shape = progress.shape or EntryShape()
            items = extracted_frames(spec, todo, build_upstream(), device, batch_seconds, description, shape) if todo else iter(())
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
            join_parts(joined, kind, [partial / f"rank-{r}-of-{world}" for r in range(world)], spec, how[1])
            _publish(joined, final)
            remove_entry_dir(partial)
        dist.barrier()

    @staticmethod
    def _clean_abandoned(parent: Path) -> None:
        """Delete temporary entries left by dead processes of this host."""
        host = socket.gethostname()
        for tmp in parent.glob(".tmp-*"):
            parts = tmp.name.split("-")
            with contextlib.suppress(ValueError, IndexError):
                if "-".join(parts[2:-2]) == host and not _pid_alive(int(parts[-2])):
                    remove_entry_dir(tmp)

    def read_info(self, name: str) -> dict | None:
        """A small JSON side file (e.g. the upstream's cost), or ``None``."""
        path = self.root / "info" / f"{name}.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def write_info(self, name: str, info: dict) -> None:
        write_json(self.root / "info" / f"{name}.json", info)


def _publish(partial: Path, final: Path) -> None:
    """Rename a complete partial entry into place (replacing an unfinished one)."""
    if final.exists():
        logger.warning("replacing unfinished feature cache entry %s", final)
        remove_entry_dir(final)
    os.rename(partial, final)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
