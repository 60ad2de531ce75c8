"""Frames that do not fit the cache budget are extracted online; ``--plan`` says so before any work."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from harness.cli import main
from harness.evaluation import plan as plan_module
from harness.evaluation.cache import FeatureCache
from harness.evaluation.entries import UpstreamSpec
from harness.evaluation.extraction import probe_shape
from harness.evaluation.heads import DownstreamModel, SplitData, collate
from harness.evaluation.online import OnlineSet
from tasks.corpora.checksums import audio_identity
from tasks.corpora.manifest import read_manifest
from tasks.registry import get_task
from upstreams.checkpoint import save_compact
from upstreams.identity import checkpoint_hash
from upstreams.model import SpeechEncoder, tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = SpeechEncoder(tiny_config("hubert")).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return save_compact(model, tmp_path_factory.mktemp("ckpt") / "tiny")


def test_online_batches_equal_cached_batches(synth_corpus, tmp_path, tiny_ckpt):
    from s3prl.nn import S3PRLUpstream

    import upstreams  # noqa: F401 - registers pruned_hubert

    upstream = S3PRLUpstream("pruned_hubert", path_or_url=str(tiny_ckpt)).eval()
    spec = UpstreamSpec("pruned_hubert", str(tiny_ckpt), checkpoint_hash(tiny_ckpt))
    frame = read_manifest(synth_corpus, "asr", "test")
    identities = [audio_identity(p, {}) for p in frame["wav_path"]]
    durations = list(frame["duration"])
    cached, _ = FeatureCache(tmp_path / "cache").get_or_extract(
        spec, list(frame["wav_path"]), identities, durations, lambda: upstream, batch_seconds=20.0
    )
    online = OnlineSet(list(frame["wav_path"]), identities, durations, lambda: upstream, probe_shape(upstream))
    assert (online.num_layers, online.hidden_size, online.downsample_rate) == (cached.num_layers, cached.hidden_size, 320)
    np.testing.assert_allclose(online.lengths, cached.lengths[cached.rows(online.keys)], atol=1)  # the estimate
    task = get_task("asr")
    task.fit_labels(task.references(frame))
    torch.manual_seed(0)
    model = DownstreamModel(cached, task.build_head(cached.hidden_size, task.preset("demo").head)).eval()
    for batch in ([0, 1, 2, 3], [5, 6, 7]):
        x_cached, len_cached = collate(SplitData(cached, cached.rows(identities), [], []), batch, "cpu")
        x_online, len_online = collate(SplitData(online, online.rows(identities), [], []), batch, "cpu")
        assert torch.equal(len_cached, len_online)
        torch.testing.assert_close(x_online, x_cached, rtol=2e-3, atol=2e-3)
        with torch.no_grad():
            torch.testing.assert_close(model(x_online, len_online), model(x_cached, len_cached), rtol=1e-3, atol=1e-3)


def _evaluate(synth_corpus, tmp_path, ckpt, *extra):
    return main(["evaluate", "--upstream", "pruned_hubert", "--ckpt", str(ckpt), "--corpus", str(synth_corpus),
                 "--max-steps", "2", "--cache", str(tmp_path / "cache"), "--records", str(tmp_path / "records"), *extra])  # fmt: skip


def test_a_zero_budget_trains_asr_online_and_caches_only_pooled_sid(synth_corpus, tmp_path, tiny_ckpt):
    assert _evaluate(synth_corpus, tmp_path, tiny_ckpt, "--tasks", "asr,sid", "--cache-budget", "0") == 0
    records = {json.loads(p.read_text())["task"]["name"]: json.loads(p.read_text()) for p in (tmp_path / "records").glob("*.json")}
    assert set(records["asr"]["timing"]["feature_kind_by_split"].values()) == {"online"}
    assert set(records["sid"]["timing"]["feature_kind_by_split"].values()) == {"pooled"}
    metas = [json.loads(m.read_text()) for m in (tmp_path / "cache" / "features").rglob("meta.json")]
    assert metas and {m["kind"] for m in metas} == {"pooled"}  # no frames were stored


def test_the_plan_says_what_would_be_cached_and_computes_nothing(synth_corpus, tmp_path, tiny_ckpt, capsys):
    assert _evaluate(synth_corpus, tmp_path, tiny_ckpt, "--tasks", "asr,pr,sid", "--plan", "--cache-budget", "0") == 0
    out = capsys.readouterr().out
    lines = {tuple(cell.strip() for cell in line.split("|")[1:3]): line for line in out.splitlines() if line.startswith("| ")}
    assert "online (frames do not fit the budget)" in lines[("asr", "train")]
    assert "pooled" in lines[("sid", "test")] and "real-time factor" in out
    assert not (tmp_path / "records").exists() or not list((tmp_path / "records").glob("*.json"))
    assert not list((tmp_path / "cache").rglob("meta.json"))  # no feature entry
    assert _evaluate(synth_corpus, tmp_path, tiny_ckpt, "--tasks", "asr,pr", "--plan") == 0
    out = capsys.readouterr().out
    assert "| asr    | train   |" in out.replace("  ", " ") or "cached frames" in out
    assert "(in the cache)" in [line for line in out.splitlines() if "| pr " in line][0]  # shares asr's audio


def test_budgets_and_space_that_cannot_be_met_fail_before_any_work(synth_corpus, tmp_path, tiny_ckpt, caplog, monkeypatch):
    with caplog.at_level(logging.ERROR):
        assert _evaluate(synth_corpus, tmp_path, tiny_ckpt, "--tasks", "asr", "--cache-budget", "1e12") == 2
    assert "--cache-budget 1e+12 GB: only" in caplog.text and "GB are free under" in caplog.text
    monkeypatch.setattr(plan_module, "free_bytes", lambda directory: 1000)
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert _evaluate(synth_corpus, tmp_path, tiny_ckpt, "--tasks", "sid") == 2
    assert "its pooled features need about" in caplog.text and "give another --cache" in caplog.text
    assert not list((tmp_path / "cache").rglob("meta.json"))


def test_run_plan_lists_the_work_and_does_none_of_it(synth_corpus, tmp_path, capsys):
    assert main(["run", "--plan", "--corpus", str(synth_corpus), "--tasks", "asr,sid", "--max-steps", "2",
                 "--out", str(tmp_path / "out"), "--records", str(tmp_path / "records"), "--cache", str(tmp_path / "cache"),
                 "--leaderboard", str(tmp_path / "board")]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "- convexity -> " in out and "- dphubert -> " in out and out.count(": to run") == 2
    assert "references (FBANK, teacher): 4 of 4 without a record" in out
    assert "| sid    | test    |" in out or "pooled" in out
    assert not (tmp_path / "records").exists() and not (tmp_path / "board").exists()
    assert not list((tmp_path / "out").glob("dphubert*")) and not list((tmp_path / "cache").rglob("meta.json"))
