"""The frozen-feature cache: computed once, reused, shared by audio, never read half-written."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from core.files import sha256_file
from harness.evaluation.cache import FeatureCache
from harness.evaluation.entries import UpstreamSpec, entry_key
from tasks.corpora.checksums import audio_identity, read_checksums
from upstreams.identity import checkpoint_hash

STRIDE = 160
LAYERS = 3
DIM = 4


class FrameUpstream(nn.Module):
    """S3PRLUpstream-like stand-in: layer l of frame t is (l + 1) x the first DIM samples of frame t."""

    downsample_rates = [STRIDE] * LAYERS

    def __init__(self, fail_on_batch: int | None = None) -> None:
        super().__init__()
        self.batches = 0
        self.fail_on_batch = fail_on_batch

    def forward(self, wavs: torch.Tensor, wavs_len: torch.Tensor):
        self.batches += 1
        if self.fail_on_batch is not None and self.batches == self.fail_on_batch:
            raise RuntimeError("simulated crash in the middle of extraction")
        frames = (wavs.shape[1] - 1) // STRIDE + 1
        padded = nn.functional.pad(wavs, (0, frames * STRIDE - wavs.shape[1]))
        base = padded.reshape(wavs.shape[0], frames, STRIDE)[..., :DIM]
        lens = (wavs_len - 1) // STRIDE + 1
        return [base * (layer + 1) for layer in range(LAYERS)], [lens] * LAYERS


def expected_features(path) -> np.ndarray:
    wav = torch.from_numpy(sf.read(path, dtype="float32")[0])
    hs, lens = FrameUpstream()(wav[None], torch.tensor([len(wav)]))
    return torch.stack(hs, dim=2)[0, : int(lens[0][0])].numpy()


@pytest.fixture
def wavs(tmp_path):
    """Five short clips of different lengths: tones plus a little noise."""
    rng = np.random.default_rng(0)
    paths, durations = [], []
    for i, seconds in enumerate([0.5, 1.2, 0.8, 0.3, 1.0]):
        t = np.arange(int(seconds * 16000)) / 16000
        audio = 0.3 * np.sin(2 * np.pi * (200 + 100 * i) * t) + 0.01 * rng.standard_normal(len(t))
        path = tmp_path / "audio" / f"clip{i}.wav"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, audio.astype(np.float32), 16000)
        paths.append(str(path))
        durations.append(seconds)
    return paths, durations


class Builder:
    """Counts how often the cache asks for the upstream."""

    def __init__(self, upstream=None):
        self.calls = 0
        self.upstream = upstream or FrameUpstream()

    def __call__(self):
        self.calls += 1
        return self.upstream


SPEC = UpstreamSpec("frames")


def _get(cache, wavs, spec=SPEC, builder=None, order=None, batch_seconds=2.0):
    paths, durations = wavs
    order = order or list(range(len(paths)))
    paths = [paths[i] for i in order]
    durations = [durations[i] for i in order]
    identities = [audio_identity(p, {}) for p in paths]
    builder = builder or Builder()
    features, seconds = cache.get_or_extract(spec, paths, identities, durations, builder, batch_seconds=batch_seconds)
    return features, seconds, identities, builder


def test_features_match_the_upstream_and_second_call_does_not_build_it(tmp_path, wavs):
    cache = FeatureCache(tmp_path / "cache")
    features, seconds, identities, builder = _get(cache, wavs)
    assert builder.calls == 1 and seconds > 0
    assert builder.upstream.batches > 1  # several length-sorted batches
    assert (features.num_layers, features.hidden_size, features.downsample_rate) == (LAYERS, DIM, STRIDE)
    for path, row in zip(wavs[0], features.rows(identities), strict=True):
        np.testing.assert_allclose(features.get(row), expected_features(path), atol=1e-3)  # fp16 storage

    again, seconds, _, builder2 = _get(cache, wavs)
    assert builder2.calls == 0 and seconds == 0.0
    assert again.directory == features.directory
    assert isinstance(again.features, np.memmap) and again.features.dtype == np.float16


def test_same_audio_in_another_manifest_order_shares_the_entry(tmp_path, wavs):
    cache = FeatureCache(tmp_path / "cache")
    first, _, ids_first, _ = _get(cache, wavs)
    second, seconds, ids_second, builder = _get(cache, wavs, order=[4, 2, 0, 3, 1])
    assert builder.calls == 0 and seconds == 0.0 and second.directory == first.directory
    for identity, row in zip(ids_second, second.rows(ids_second), strict=True):
        np.testing.assert_array_equal(second.get(row), first.get(first.rows([identity])[0]))


def test_key_changes_with_checkpoint_precision_and_audio(tmp_path, wavs):
    ids = [audio_identity(p, {}) for p in wavs[0]]
    base = entry_key(UpstreamSpec("frames"), ids)
    assert entry_key(UpstreamSpec("frames", "a.ckpt", "f" * 64), ids) != base
    assert entry_key(UpstreamSpec("frames", dtype="bfloat16"), ids) != base
    assert entry_key(UpstreamSpec("other"), ids) != base
    assert entry_key(UpstreamSpec("frames"), ids[:-1]) != base
    # rewriting a file changes its identity (size/mtime here, content hash with checksums)
    sf.write(wavs[0][0], np.zeros(9000, dtype=np.float32), 16000)
    assert entry_key(UpstreamSpec("frames"), [audio_identity(p, {}) for p in wavs[0]]) != base


def test_crash_during_extraction_leaves_no_entry_and_a_rerun_completes(tmp_path, wavs):
    cache = FeatureCache(tmp_path / "cache")
    with pytest.raises(RuntimeError, match="simulated crash"):
        _get(cache, wavs, builder=Builder(FrameUpstream(fail_on_batch=2)))
    key = entry_key(UpstreamSpec("frames"), [audio_identity(p, {}) for p in wavs[0]])
    assert cache.load(key) is None
    assert not any(p.name.startswith(".tmp-") for p in cache.entry_dir(key).parent.iterdir())
    features, seconds, _, builder = _get(cache, wavs)
    assert builder.calls == 1 and seconds > 0 and len(features) == 5


def test_damaged_or_partial_entry_is_ignored_and_recomputed(tmp_path, wavs):
    cache = FeatureCache(tmp_path / "cache")
    features, _, _, _ = _get(cache, wavs)
    directory = features.directory
    data = (directory / "features.f16").read_bytes()
    (directory / "features.f16").write_bytes(data[: len(data) // 2])  # truncated, e.g. a half copy
    again, seconds, identities, builder = _get(cache, wavs)
    assert builder.calls == 1 and seconds > 0
    assert (again.directory / "features.f16").stat().st_size == len(data)

    (again.directory / "meta.json").unlink()  # a directory without meta.json was never finished
    _, seconds, _, builder = _get(cache, wavs)
    assert builder.calls == 1 and seconds > 0


def test_temporary_entries_of_dead_processes_are_removed(tmp_path, wavs):
    cache = FeatureCache(tmp_path / "cache")
    key = entry_key(UpstreamSpec("frames"), [audio_identity(p, {}) for p in wavs[0]])
    parent = cache.entry_dir(key).parent
    parent.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    abandoned = parent / f".tmp-{key[:16]}-{socket.gethostname()}-{int(dead.stdout)}-deadbeef"
    alive = parent / f".tmp-{key[:16]}-{socket.gethostname()}-{os.getpid()}-cafecafe"
    abandoned.mkdir()
    alive.mkdir()
    _get(cache, wavs)
    assert not abandoned.exists()
    assert alive.exists()  # a live process may still be writing it


def test_audio_identity_prefers_corpus_checksums(tmp_path, wavs):
    root = tmp_path / "audio"
    (tmp_path / "checksums.sha256").write_text(
        "".join(f"{sha256_file(p)}  audio/{os.path.basename(p)}\n" for p in wavs[0]), encoding="utf-8"
    )
    checksums = read_checksums(tmp_path)
    assert audio_identity(wavs[0][0], checksums) == "sha256:" + sha256_file(wavs[0][0])
    assert audio_identity(root / "clip1.wav", {}).startswith("file:")


def test_checkpoint_hash(tmp_path):
    assert checkpoint_hash(None) is None
    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(b"weights")
    assert checkpoint_hash(ckpt) == sha256_file(ckpt)
    assert len(checkpoint_hash(tmp_path)) == 64  # a directory checkpoint hashes all its files
    with pytest.raises(FileNotFoundError, match="--ckpt .*missing.pt: no such file"):
        checkpoint_hash(tmp_path / "missing.pt")
    with pytest.raises(FileNotFoundError, match="no such file"):
        checkpoint_hash("weights.pt")
    # sources that are not local files are identified by their text
    assert checkpoint_hash("preset:tiny_hubert") != checkpoint_hash("torchaudio:HUBERT_BASE")
    assert checkpoint_hash("facebook/hubert-base-ls960").startswith("name:")


class CountingUpstream(FrameUpstream):
    """Counts the utterances it is asked for."""

    def __init__(self, fail_on_batch: int | None = None) -> None:
        super().__init__(fail_on_batch)
        self.utterances = 0

    def forward(self, wavs, wavs_len):
        out = super().forward(wavs, wavs_len)
        self.utterances += wavs.shape[0]
        return out


def _extract(cache, wavs, kind, upstream):
    paths, durations = wavs
    identities = [audio_identity(p, {}) for p in paths]
    return cache.get_or_extract(SPEC, paths, identities, durations, lambda: upstream, batch_seconds=1.3, kind=kind)[0]


def _files(entry):
    names = ("features.f16", "offsets.npy", "keys.json") if entry.kind == "frames" else ("means.npy", "lengths.npy", "keys.json")
    return {name: (entry.directory / name).read_bytes() for name in names}


@pytest.mark.parametrize("kind", ["frames", "pooled"])
def test_a_killed_extraction_resumes_from_its_last_verified_chunk(tmp_path, wavs, monkeypatch, kind):
    import harness.evaluation.extraction

    monkeypatch.setattr(harness.evaluation.extraction, "CHUNK_BYTES", 1)  # every utterance is a chunk
    whole = _extract(FeatureCache(tmp_path / "whole"), wavs, kind, CountingUpstream())
    cache = FeatureCache(tmp_path / "cache")
    crashing = CountingUpstream(fail_on_batch=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _extract(cache, wavs, kind, crashing)
    done = crashing.utterances  # the two batches before the crash, committed chunk by chunk
    assert 0 < done < 5
    resumed = CountingUpstream()
    entry = _extract(cache, wavs, kind, resumed)
    assert resumed.utterances == 5 - done  # only what was not committed is computed again
    assert _files(entry) == _files(whole)  # byte for byte the uninterrupted entry
    assert not list(entry.directory.parent.glob(".partial-*"))


def test_a_chunk_that_fails_its_check_is_recomputed(tmp_path, wavs, monkeypatch):
    import harness.evaluation.extraction

    monkeypatch.setattr(harness.evaluation.extraction, "CHUNK_BYTES", 1)
    whole = _extract(FeatureCache(tmp_path / "whole"), wavs, "frames", CountingUpstream())
    cache = FeatureCache(tmp_path / "cache")
    with pytest.raises(RuntimeError, match="simulated crash"):
        _extract(cache, wavs, "frames", CountingUpstream(fail_on_batch=3))
    (partial,) = cache.root.rglob(".partial-*")
    data = bytearray((partial / "features.f16").read_bytes())
    data[:8] = b"\x00" * 8  # the first chunk, damaged on disk
    (partial / "features.f16").write_bytes(bytes(data))
    resumed = CountingUpstream()
    entry = _extract(cache, wavs, "frames", resumed)
    assert resumed.utterances == 5  # the damaged chunk and all after it, never used
    assert _files(entry) == _files(whole)


def test_two_writers_of_one_entry_extract_it_once(tmp_path, wavs):
    """The second writer waits for the first one's lock, then reads the finished entry."""
    import threading

    cache = FeatureCache(tmp_path / "cache")
    builders = [Builder(), Builder()]
    results = [None, None]

    def extract(i):
        results[i] = _get(cache, wavs, builder=builders[i])[0]

    threads = [threading.Thread(target=extract, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(b.calls for b in builders) == 1
    assert results[0].directory == results[1].directory and len(results[0]) == 5
