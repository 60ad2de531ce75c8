"""Utterance-level heads on pooled statistics: the same logits as the frames, far fewer bytes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.records import load_records
from harness.evaluation.cache import FeatureCache
from harness.evaluation.config import EvaluateConfig
from harness.evaluation.engine import evaluate, feature_kind
from harness.evaluation.entries import UpstreamSpec
from harness.evaluation.heads import DownstreamModel, SplitData, collate
from tasks.corpora.checksums import audio_identity
from tasks.corpora.manifest import read_manifest
from tasks.registry import get_task
from upstreams.checkpoint import save_compact
from upstreams.identity import checkpoint_hash
from upstreams.model import SpeechEncoder, tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class RandomFrames(torch.nn.Module):
    """S3PRLUpstream-like stand-in: 5 layers of random frames (seeded by the audio), 20 ms stride."""

    downsample_rates = [320] * 5

    def forward(self, wavs: torch.Tensor, wavs_len: torch.Tensor):
        frames = wavs.shape[1] // 320
        generator = torch.Generator().manual_seed(int(wavs.abs().sum() * 1000) % 2**31)
        states = [3 * torch.randn(wavs.shape[0], frames, 24, generator=generator) + layer for layer in range(5)]
        return states, [wavs_len // 320] * 5


def _entries(tmp_path, corpus, upstream, spec, order=("frames", "pooled")):
    """Frames and pooled entries of the corpus' SID test audio, in ``order`` (pooled first: from the upstream)."""
    frame = read_manifest(corpus, "sid", "test")
    identities = [audio_identity(p, {}) for p in frame["wav_path"]]
    cache = FeatureCache(tmp_path / "cache")
    calls = []

    def build():
        calls.append(1)
        return upstream

    args = (spec, list(frame["wav_path"]), identities, list(frame["duration"]), build)
    sets = {kind: cache.get_or_extract(*args, batch_seconds=20.0, kind=kind)[0] for kind in order}
    return sets["frames"], sets["pooled"], identities, calls


def _logits(model, data, batch):
    features, lengths = collate(data, batch, "cpu")
    with torch.no_grad():
        return model(features, lengths)


def _random_model(features, task_name="sid"):
    task = get_task(task_name)
    task.fit_labels([("a",), ("b",), ("c",)] if task_name == "sid" else [("x", "y", "z"), ("u", "v", "w")])
    torch.manual_seed(0)
    model = DownstreamModel(features, task.build_head(features.hidden_size, task.preset("demo").head)).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn_like(parameter))  # the layer weights too: not the uniform start
    return model


@pytest.mark.parametrize("task_name", ["sid", "slu"])
def test_pooled_logits_equal_frame_logits_on_random_frames(synth_corpus, tmp_path, task_name):
    spec = UpstreamSpec("random_frames")
    frames, pooled, identities, _ = _entries(tmp_path, synth_corpus, RandomFrames(), spec)
    assert pooled.kind == "pooled" and frames.kind == "frames"
    model = _random_model(frames, task_name)
    rows_f, rows_p = frames.rows(identities), pooled.rows(identities)
    batch = list(range(min(16, len(identities))))
    from_frames = _logits(model, SplitData(frames, rows_f, [], []), batch)
    from_means = _logits(model, SplitData(pooled, rows_p, [], []), batch)
    assert from_frames.shape == from_means.shape == (len(batch), model.head.output.out_features)
    assert (from_frames.abs().max() > 1).item()  # not a trivially small output
    torch.testing.assert_close(from_means, from_frames, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(pooled.lengths[rows_p], frames.lengths[rows_f])  # batches cut alike


def test_pooled_logits_equal_frame_logits_on_a_real_upstream(synth_corpus, tmp_path):
    """A random-weight HuBERT-shaped compact checkpoint through s3prl's ``pruned_hubert`` entry;
    the pooled entry is made first, straight from the upstream, without keeping frames."""
    from s3prl.nn import S3PRLUpstream

    import upstreams  # noqa: F401 - registers pruned_hubert

    torch.manual_seed(0)
    ckpt = save_compact(SpeechEncoder(tiny_config("hubert")).eval(), tmp_path / "tiny")
    upstream = S3PRLUpstream("pruned_hubert", path_or_url=str(ckpt)).eval()
    spec = UpstreamSpec("pruned_hubert", str(ckpt), checkpoint_hash(ckpt))
    frames, pooled, identities, calls = _entries(tmp_path, synth_corpus, upstream, spec, order=("pooled", "frames"))
    assert len(calls) == 2  # pooled extracted on its own, then the frames
    model = _random_model(frames)
    batch = list(range(min(12, len(identities))))
    from_frames = _logits(model, SplitData(frames, frames.rows(identities), [], []), batch)
    from_means = _logits(model, SplitData(pooled, pooled.rows(identities), [], []), batch)
    torch.testing.assert_close(from_means, from_frames, rtol=1e-5, atol=1e-5)


def test_pooled_from_cached_frames_skips_the_upstream_and_equals_extraction(synth_corpus, tmp_path):
    spec = UpstreamSpec("random_frames")
    frames, pooled, identities, calls = _entries(tmp_path / "a", synth_corpus, RandomFrames(), spec)
    assert len(calls) == 1  # the pooled entry averaged the cached frames
    _, direct, _, _ = _entries(tmp_path / "b", synth_corpus, RandomFrames(), spec, order=("pooled", "frames"))
    rows = pooled.rows(identities)
    np.testing.assert_array_equal(np.asarray(pooled.means)[rows], np.asarray(direct.means)[direct.rows(identities)])
    # bytes: one [layers, dim] float32 per utterance against [frames, layers, dim] float16
    frame_bytes = (frames.directory / "features.f16").stat().st_size
    mean_bytes = (pooled.directory / "means.npy").stat().st_size
    assert mean_bytes < frame_bytes / 10
    assert json.loads((pooled.directory / "meta.json").read_text())["kind"] == "pooled"


def test_a_damaged_pooled_entry_is_recomputed(synth_corpus, tmp_path):
    spec = UpstreamSpec("random_frames")
    _, pooled, identities, _ = _entries(tmp_path, synth_corpus, RandomFrames(), spec, order=("pooled", "frames"))
    means = pooled.directory / "means.npy"
    np.save(means, np.zeros((3, 5, 24), dtype=np.float32))  # a wrong shape, as a half copy would leave
    frames, again, _, calls = _entries(tmp_path, synth_corpus, RandomFrames(), spec)
    assert len(calls) == 0  # rebuilt from the frames entry, not read as it was
    assert again.means.shape == (len(set(identities)), 5, 24)


def test_which_tasks_train_on_pooled_statistics():
    sid, slu, asr = get_task("sid"), get_task("slu"), get_task("asr")
    assert feature_kind(sid, sid.preset("demo")) == "pooled"
    assert feature_kind(slu, slu.preset("paper")) == "pooled"
    assert feature_kind(sid, sid.preset("paper")) == "frames"  # SUPERB's 8 s random crop needs the frames
    assert feature_kind(asr, asr.preset("demo")) == "frames"
    assert feature_kind(sid, sid.preset("demo"), "frames") == "frames"
    with pytest.raises(ValueError, match="--utterance-features"):
        feature_kind(sid, sid.preset("demo"), "means")


def test_sid_trains_alike_on_pooled_statistics_and_on_frames(synth_corpus, tmp_path):
    """Same batches, same logits: a short SID run ends with the same layer weights and predictions."""
    records = {}
    for mode in ("auto", "frames"):
        config = EvaluateConfig(upstream="fbank", tasks=["sid"], corpus=synth_corpus, cache_dir=tmp_path / "cache",
                                records_dir=tmp_path / mode, max_steps=30, utterance_features=mode)  # fmt: skip
        evaluate(config)
        (records[mode],) = load_records(tmp_path / mode)
    pooled, frames = records["auto"], records["frames"]
    assert set(pooled.sections["timing"]["feature_kind_by_split"].values()) == {"pooled"}
    assert set(frames.sections["timing"]["feature_kind_by_split"].values()) == {"frames"}
    np.testing.assert_allclose(pooled.extra["layer_weights"], frames.extra["layer_weights"], atol=1e-4)
    same = np.mean(np.equal(pooled.extra["per_utterance"]["numerator"], frames.extra["per_utterance"]["numerator"]))
    assert same >= 0.98, same
    assert abs(pooled.metrics["test"]["accuracy"] - frames.metrics["test"]["accuracy"]) <= 2.0
