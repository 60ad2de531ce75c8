"""``harness evaluate`` end to end on SynthSpeech micro, records, CLI errors, and engine pieces."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from torch import nn

from core.records import load_records, write_record
from core.registry import UnknownNameError
from harness.batching import BucketedBatches
from harness.cli import main
from harness.evaluation.config import EvaluateConfig
from harness.evaluation.engine import evaluate
from harness.evaluation.provenance import build_record
from tasks.corpora.manifest import CorpusInfo
from tasks.registry import get_task

TINY = "tiny_test_upstream"
FAST = ["--max-steps", "2", "--extract-batch-seconds", "32"]


class TinyExpert(nn.Module):
    """A seeded 2-layer transformer over 20 ms frames, in s3prl's upstream contract."""

    built = 0

    def __init__(self) -> None:
        super().__init__()
        TinyExpert.built += 1
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.frontend = nn.Conv1d(1, 32, kernel_size=320, stride=320)
            self.layers = nn.ModuleList(
                nn.TransformerEncoderLayer(32, 2, 64, dropout=0.0, batch_first=True) for _ in range(2)
            )

    def get_downsample_rates(self, key: str = "hidden_states") -> int:
        return 320

    def forward(self, wavs: list[torch.Tensor]) -> dict:
        lengths = torch.tensor([len(w) for w in wavs])
        padded = nn.utils.rnn.pad_sequence(wavs, batch_first=True)
        padded = nn.functional.pad(padded, (0, -padded.shape[1] % 320))
        x = self.frontend(padded[:, None]).transpose(1, 2)
        pad_mask = torch.arange(x.shape[1])[None] >= ((lengths + 319) // 320)[:, None]
        states = [x]
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=pad_mask)
            states.append(x)
        return {"hidden_states": states}


@pytest.fixture
def tiny_upstream(monkeypatch):
    import s3prl.hub

    monkeypatch.setattr(s3prl.hub, TINY, lambda ckpt=None, refresh=False, **kwargs: TinyExpert(), raising=False)
    TinyExpert.built = 0
    return TinyExpert


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _run(*args: str) -> int:
    return main(["evaluate", *args])


def test_evaluate_fbank_and_a_registered_upstream_on_all_tasks(synth_corpus, tmp_path, tiny_upstream):
    common = ["--corpus", str(synth_corpus), "--cache", str(tmp_path / "cache"), "--records", str(tmp_path / "rec"), *FAST]
    assert _run("--upstream", "fbank", "--tasks", "asr,pr,sid,slu", *common) == 0
    assert _run("--upstream", TINY, "--tasks", "asr,pr,sid,slu", *common) == 0
    assert tiny_upstream.built == 1

    records = [r.to_dict() for r in load_records(tmp_path / "rec")]  # the records as written
    assert len(records) == 8
    by_key = {(r["upstream"]["name"], r["task"]["name"]): r for r in records}
    fingerprint = CorpusInfo.read(synth_corpus).fingerprint
    mains = {"asr": ("wer", False), "pr": ("per", False), "sid": ("accuracy", True), "slu": ("accuracy", True)}
    for (upstream, task), record in by_key.items():
        name, higher = mains[task]
        assert record["main_score"]["name"] == name and record["main_score"]["higher_is_better"] is higher
        assert record["main_score"]["value"] == record["metrics"]["test"][name]
        assert 0.0 <= record["main_score"]["value"] <= 100.0 or name in ("wer", "per")
        assert record["corpus"]["fingerprint"] == fingerprint and record["corpus"]["name"] == "synthspeech"
        assert record["config"]["preset"] == "demo" and record["config"]["train"]["steps"] == 2
        assert record["seeds"] == {"train": 0}
        assert record["device"]["type"] == "cpu" and record["device"]["model"] and record["device"]["isa"]
        assert "blas" in record["device"]  # which kernels made the figures
        assert record["git"]["commit"] and record["versions"]["torch"] == torch.__version__
        assert record["timing"]["training_s"] > 0 and "extraction_s" in record["timing"]
        assert record["command"].startswith(f"harness evaluate --upstream {upstream} ")
        assert sum(record["layer_weights"]) == pytest.approx(1.0)
        counts = record["per_utterance"]  # per test utterance: the main metric is their summed ratio
        assert counts["metric"] == name and len(counts["ids"]) == record["corpus"]["utterances"]["test"]
        assert 100 * sum(counts["numerator"]) / sum(counts["denominator"]) == pytest.approx(record["main_score"]["value"])
    assert by_key[("fbank", "asr")]["metrics"]["test"].keys() == {"wer", "cer"}
    assert by_key[("fbank", "asr")]["upstream"]["params"] == 0
    assert by_key[("fbank", "asr")]["upstream"]["hidden_size"] == 240  # 80 mel bins + deltas
    tiny = by_key[(TINY, "sid")]["upstream"]
    assert tiny["num_layers"] == 3 and tiny["params"] == sum(p.numel() for p in TinyExpert().parameters())
    assert tiny["macs"] > 0 and tiny["macs_per_second"] == tiny["macs"] / tiny["input_seconds"]
    assert len(by_key[(TINY, "sid")]["layer_weights"]) == 3
    # ASR, PR and SID read the same audio: only the first of them extracted anything
    assert by_key[(TINY, "asr")]["timing"]["extraction_s"] > 0
    assert by_key[(TINY, "pr")]["timing"]["feature_cache_hits"] == {"train": True, "valid": True, "test": True}
    # SID and SLU train on pooled statistics; SID's were averaged from the cached frames (built == 1 above)
    for task, kind in (("asr", "frames"), ("pr", "frames"), ("sid", "pooled"), ("slu", "pooled")):
        assert by_key[(TINY, task)]["timing"]["feature_kind_by_split"] == dict.fromkeys(("train", "valid", "test"), kind)
    assert by_key[(TINY, "slu")]["timing"]["extraction_s"] > 0
    entries = [p for p in (tmp_path / "cache" / "features").glob("*/*") if not p.name.startswith(".")]
    # upstreams x (sentence frames for asr/pr, their means for sid, command means for slu) x splits
    assert len(entries) == 2 * 3 * 3

    # a second run is served from the cache: the upstream is not even built
    assert _run("--upstream", TINY, "--tasks", "sid", *common) == 0
    assert tiny_upstream.built == 1 + 1  # the TinyExpert() built above for counting parameters
    assert len(load_records(tmp_path / "rec")) == 9


def test_lr_sweep_selects_the_best_valid_rate(synth_corpus, tmp_path):
    config = EvaluateConfig(
        upstream="fbank", tasks=["sid"], corpus=synth_corpus, lr_sweep=True, max_steps=3,
        cache_dir=tmp_path / "cache", records_dir=tmp_path / "rec",
    )
    (path,) = evaluate(config)
    record = json.loads(path.read_text(encoding="utf-8"))
    sweep = record["lr_sweep"]
    assert [entry["lr"] for entry in sweep] == list(get_task("sid").preset("demo").train.lr_grid)
    assert len(sweep) == 3
    best = max(sweep, key=lambda entry: entry["valid"]["accuracy"])  # first of equals wins, like the engine
    assert record["selection"]["best_lr"] == best["lr"] == record["config"]["lr"]
    assert record["metrics"]["valid"] == best["valid"]


def test_demo_heads_warm_up_then_decay_to_zero_over_the_capped_steps(synth_corpus, tmp_path, monkeypatch):
    """The demo schedule: linear warm-up over 5 % of the steps, linear decay to 0 at the last step
    (``--max-steps`` caps the steps the decay spans); the paper schedule keeps SUPERB's constant rate."""
    demo = get_task("sid").preset("demo").train
    assert demo.warmup_fraction == 0.05 and get_task("sid").preset("paper").train.warmup_fraction is None
    rates: list[float] = []
    adam_step = torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        rates.append(self.param_groups[0]["lr"])
        return adam_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    config = EvaluateConfig(
        upstream="fbank", tasks=["sid"], corpus=synth_corpus, max_steps=40,
        cache_dir=tmp_path / "cache", records_dir=tmp_path / "rec",
    )
    evaluate(config)
    assert len(rates) == 40
    assert rates[0] == pytest.approx(demo.lr / 2)  # warm-up: floor(40 x 0.05) = 2 steps
    assert rates[1] == rates[2] == pytest.approx(demo.lr)  # the peak, where the decay starts
    assert all(a > b for a, b in zip(rates[2:-1], rates[3:], strict=True))  # then strictly falling
    assert rates[-1] == pytest.approx(demo.lr / 38)  # the last step's rate; 0 after it


def test_train_config_rejects_a_warmup_fraction_outside_0_1():
    from tasks.base import TrainConfig

    with pytest.raises(ValueError, match="warmup_fraction"):
        TrainConfig(steps=10, batch_size=2, lr=1e-3, lr_grid=(1e-3,), eval_every=5, warmup_fraction=1.0)


def test_unknown_names_are_errors_that_list_the_known_ones(tmp_path, caplog):
    caplog.set_level(logging.ERROR)
    assert _run("--upstream", "fbank", "--tasks", "asr,sdi", "--corpus", str(tmp_path)) == 2
    assert "unknown task 'sdi'. Did you mean 'sid'? Known tasks: asr, ks, pr, sid, slu." in caplog.text
    caplog.clear()
    assert _run("--upstream", "fbnak", "--tasks", "asr", "--corpus", str(tmp_path)) == 2
    assert "unknown upstream 'fbnak'" in caplog.text and "'fbank'" in caplog.text
    assert "Known upstreams:" in caplog.text and "hubert" in caplog.text
    caplog.clear()
    assert _run("--upstream", "fbank", "--tasks", "asr", "--corpus", str(tmp_path / "nowhere")) == 2
    assert "not a prepared corpus" in caplog.text
    caplog.clear()
    assert _run("--upstream", "fbank", "--tasks", "asr", "--corpus", "timit:/data/timit") == 2
    assert "unknown corpus 'timit'" in caplog.text and "librispeech" in caplog.text


def test_bucketed_batches_cover_each_utterance_once_per_epoch_in_similar_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(50, 500, size=103)
    batches = BucketedBatches(lengths, 10, np.random.default_rng(1))
    epoch = [next(batches) for _ in range(11)]
    assert sorted(i for batch in epoch for i in batch) == list(range(103))
    spread = np.mean([np.ptp(lengths[b]) for b in epoch])
    assert spread < 0.5 * np.ptp(lengths)  # buckets group similar lengths
    assert [next(batches) for _ in range(11)] != epoch  # the next epoch is reshuffled


def test_records_never_overwrite_each_other_and_need_the_main_metric(tmp_path):
    task = {"name": "sid", "metrics": ["accuracy"], "main_metric": "accuracy", "higher_is_better": True}
    fields = dict(task=task, upstream={"name": "fbank"}, corpus={}, config={}, seeds={}, timing={}, device={})
    record = build_record(metrics={"test": {"accuracy": 50.0}}, **fields)
    first, second = write_record(record, tmp_path), write_record(record, tmp_path)
    assert first != second and len(load_records(tmp_path)) == 2
    assert not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(ValueError, match="lacks the test value of its main metric 'accuracy'"):
        build_record(metrics={"valid": {"accuracy": 1.0}}, **fields)


def test_unknown_upstream_raises_from_the_engine(synth_corpus, tmp_path):
    config = EvaluateConfig(upstream="no_such_model", tasks=["sid"], corpus=synth_corpus, cache_dir=tmp_path)
    with pytest.raises(UnknownNameError, match="Known upstreams"):
        evaluate(config)


def test_project_upstream_entry_with_its_cost_figures(synth_corpus, tmp_path):
    config = EvaluateConfig(
        upstream="pruned_hubert", ckpt="preset:tiny_hubert", tasks=["sid"], corpus=synth_corpus, max_steps=1,
        cache_dir=tmp_path / "cache", records_dir=tmp_path / "rec",
    )
    (path,) = evaluate(config)
    upstream = json.loads(path.read_text(encoding="utf-8"))["upstream"]
    assert upstream["cost_source"] == "upstreams.cost"
    assert upstream["params"] > 0 and upstream["macs_per_second"] > 0 and upstream["real_time_factor"] > 0
    assert upstream["ckpt"] == "preset:tiny_hubert" and upstream["ckpt_sha256"].startswith("name:")


def test_head_seeds_share_one_session_and_each_gets_its_record(synth_corpus, tmp_path, monkeypatch):
    import harness.evaluation.engine as engine

    hashed = []
    real_hash = engine.checkpoint_hash
    monkeypatch.setattr(engine, "checkpoint_hash", lambda ckpt: hashed.append(ckpt) or real_hash(ckpt))
    config = EvaluateConfig(upstream="fbank", tasks=["sid", "slu"], corpus=synth_corpus, head_seeds=[0, 2], max_steps=2,
                            cache_dir=tmp_path / "cache", records_dir=tmp_path / "rec")  # fmt: skip
    paths = evaluate(config)
    made = sorted((r.task.name, r.seed) for r in load_records(tmp_path / "rec"))
    assert len(paths) == 4 and made == [("sid", 0), ("sid", 2), ("slu", 0), ("slu", 2)]
    assert len(hashed) == 1  # one session: the checkpoint identified once for every task and seed
    given = EvaluateConfig(upstream="fbank", tasks=["sid"], corpus=synth_corpus, max_steps=2, ckpt_sha256="abc",
                           cache_dir=tmp_path / "cache", records_dir=tmp_path / "rec2")  # fmt: skip
    (path,) = evaluate(given)
    assert len(hashed) == 1 and json.loads(path.read_text())["upstream"]["ckpt_sha256"] == "abc"


def test_every_sparsity_is_refused_with_the_same_words():
    from harness.compression.dphubert.options import DPHuBERTConfig
    from harness.compression.sparsity import check_sparsity
    from harness.run import RunConfig, check_config

    for refuse in (lambda: check_sparsity([0.5, 1.5]), lambda: DPHuBERTConfig(sparsity=0.0).validate(),
                   lambda: check_config(RunConfig(sparsities=[1.0]))):  # fmt: skip
        with pytest.raises(ValueError, match=r"--sparsity must lie in \(0, 1\), got (1\.5|0|1): give the fraction"):
            refuse()
