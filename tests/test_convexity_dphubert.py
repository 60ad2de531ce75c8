"""convexity_dphubert: convexity picks the depth, DPHuBERT prunes inside it to a budget of the whole teacher."""

from __future__ import annotations

import json

import pytest
import torch
from convexity_fakes import fake_result  # tests/convexity_fakes.py
from resume_checks import assert_resumed_equals_whole  # tests/resume_checks.py

from harness import batching, training
from harness.compression import convexity_dphubert
from harness.compression.convexity import method as convexity
from harness.compression.dphubert import method as dphubert
from harness.compression.dphubert.hardconcrete import EncoderGates
from upstreams.checkpoint import load_compact, save_compact
from upstreams.model import SpeechEncoder, tiny_config

FAST = dict(batch_seconds=3.0, crop_seconds=1.0, min_seconds=0.5, save_every=4, stage1_lr=1e-3, reg_lr=0.05)
SCORING = dict(labels="word,speaker", max_points=40)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = SpeechEncoder(tiny_config("hubert")).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return save_compact(model, tmp_path_factory.mktemp("teacher") / "tiny")


@pytest.fixture
def peak_at(monkeypatch):
    """Convexity curves that peak at the given hidden state (the depth the rule keeps); counts the scorings."""
    state = {"peak": 3, "scorings": 0}

    def fake_scores(layers, labels, config):
        state["scorings"] += 1
        return [fake_result(100.0 - 10 * abs(i - state["peak"])) for i in range(len(layers))]

    monkeypatch.setattr(convexity, "graph_convexity_per_layer", fake_scores)
    return state


def _meta(out):
    return json.loads((out / "config.json").read_text())["metadata"]["compression"]


def _log(out):
    return [json.loads(line) for line in (out / "convexity_dphubert" / "log.jsonl").read_text().splitlines()]


def test_the_convexity_depth_is_pruned_to_a_budget_of_the_whole_teacher(synth_corpus, teacher_dir, tmp_path, peak_at):
    out = convexity_dphubert.compress_convexity_dphubert(
        str(teacher_dir), tmp_path / "hybrid", corpus=synth_corpus, preset="demo", device="cpu", sparsity=0.5,
        stage1_steps=8, stage2_steps=2, measure_cost=False, **SCORING, **FAST)  # fmt: skip
    teacher, compact = load_compact(teacher_dir), load_compact(out)
    budget = round(0.5 * teacher.num_params())
    assert teacher.truncate(3).num_params() > budget  # the depth alone is over budget: DPHuBERT prunes inside it
    assert budget - 0.01 * budget <= compact.num_params() <= budget
    assert compact.config.num_layers == 3
    meta = _meta(out)
    assert meta["method"] == "convexity_dphubert" and meta["sparsity"] == 0.5 and meta["teacher"] == str(teacher_dir)
    assert (meta["kept_layers"], meta["teacher_layers"], meta["under_budget"]) == (3, 4, False)
    assert meta["teacher_params"] == teacher.num_params() and meta["params"] == compact.num_params()
    assert meta["achieved_sparsity"] == pytest.approx(1 - compact.num_params() / teacher.num_params(), abs=1e-5)
    assert meta["compact_vs_masked_max_abs_diff"] < 1e-4 and meta["distill_layers"] == [0, 1, 2, 3]
    log = _log(out)
    start = 1 - teacher.truncate(3).num_params() / teacher.num_params()
    assert log[0]["target_sparsity"] == pytest.approx(start, abs=1e-4)  # the target rises from the depth's own size
    assert log[7]["target_sparsity"] == pytest.approx(0.5)
    curves = json.loads((out / "convexity.json").read_text())
    assert curves["kept_layers"] == 3 and len(curves["word"]) == 5 and (out / "convexity.png").is_file()

    from core.records import Record
    from leaderboard.labels import describe, method_cell

    info = {"name": "pruned_hubert", "ckpt": str(out), "checkpoint_metadata": {"compression": meta},
            "compression": {k: meta[k] for k in ("method", "teacher", "sparsity", "kept_layers", "teacher_layers")}}  # fmt: skip
    row = {"upstream": "pruned_hubert", "method": "convexity_dphubert", "_record": Record.from_dict(_record(info))}
    describe(row, set())
    assert method_cell(row) == "convexity_dphubert, 3/4 layers"


def _record(upstream: dict) -> dict:
    return {
        "record_version": 1, "date": "2026-11-01T10:00:00+00:00", "upstream": upstream,
        "task": {"name": "sid", "metrics": ["accuracy"], "main_metric": "accuracy", "higher_is_better": True},
        "main_score": {"name": "accuracy", "value": 50.0, "higher_is_better": True, "split": "test"},
        "metrics": {"test": {"accuracy": 50.0}}, "corpus": {"name": "c", "fingerprint": "f"},
        "config": {"preset": "demo"}, "device": {"type": "cpu"},
    }  # fmt: skip


def test_compact_model_equals_masked_truncated_model_at_the_whole_teachers_budget(teacher_dir):
    teacher = load_compact(teacher_dir)
    truncated = teacher.truncate(3)
    gates = EncoderGates(truncated.config, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        for name in gates.names:
            gates.gate(name).log_alpha.uniform_(-4, 4, generator=torch.Generator().manual_seed(len(name) + 7))
    student = dphubert.DistillStudent(dphubert.student_from_teacher(truncated, 0.0), [0, 1, 2, 3], gates)
    config = dphubert.resolve_config("demo", 0.55, {"budget_tolerance": 0.0})  # the hybrid always projects
    budget = round(0.45 * teacher.num_params())
    compact, summary = dphubert.prune_student(student, budget, config, torch.randn(2, 8000))
    assert budget - 0.01 * budget <= compact.num_params() <= budget and compact.config.num_layers == 3
    masks, _ = dphubert.final_masks(gates, budget, config)
    student.encoder.eval().set_masks(masks)
    waveforms = torch.randn(3, 12000, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        masked, _ = student.encoder(waveforms)
        pruned, _ = compact.eval()(waveforms)
    for a, b in zip(masked, pruned, strict=True):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=0)


def test_a_depth_already_within_the_budget_is_saved_truncated_and_says_so(synth_corpus, teacher_dir, tmp_path, peak_at, caplog):
    peak_at["peak"] = 1
    with caplog.at_level("WARNING"):
        out = convexity_dphubert.compress_convexity_dphubert(
            str(teacher_dir), tmp_path / "under", corpus=synth_corpus, preset="demo", device="cpu", sparsity=0.5,
            stage1_steps=4, stage2_steps=2, measure_cost=False, **SCORING, **FAST)  # fmt: skip
    assert "nothing to prune" in caplog.text
    meta = _meta(out)
    assert (meta["under_budget"], meta["pruned"], meta["kept_layers"]) == (True, False, 1)
    assert meta["achieved_sparsity"] > 0.5 and "truncated only" in meta["note"]
    expected = load_compact(teacher_dir).truncate(1)
    for (name, x), (_, y) in zip(load_compact(out).state_dict().items(), expected.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    assert not (out / "convexity_dphubert" / "log.jsonl").exists()


def test_killed_run_resumes_to_the_same_result_without_scoring_again(synth_corpus, teacher_dir, tmp_path, monkeypatch, peak_at):
    options = dict(preset="demo", device="cpu", sparsity=0.5, stage1_steps=10, stage2_steps=6, measure_cost=False,
                   **SCORING, **FAST)  # fmt: skip
    whole = convexity_dphubert.compress_convexity_dphubert(str(teacher_dir), tmp_path / "whole", corpus=synth_corpus, **options)
    real_batches = batching.bucketed_batches
    calls = {"n": 0}

    def killed(*args, **kwargs):  # in stage 1 after its first resume point, then in stage 2 before its first
        calls["n"] += 1
        for i, batch in enumerate(real_batches(*args, **kwargs)):
            if (calls["n"], i) in ((1, 6), (3, 3)):
                raise KeyboardInterrupt
            yield batch

    resumed = tmp_path / "resumed"
    monkeypatch.setattr(batching, "bucketed_batches", killed)
    scorings = peak_at["scorings"]
    with pytest.raises(KeyboardInterrupt):
        convexity_dphubert.compress_convexity_dphubert(str(teacher_dir), resumed, corpus=synth_corpus, **options)
    assert training.load_state(resumed / "convexity_dphubert" / "stage1.pt")["step"] == 4
    with pytest.raises(KeyboardInterrupt):
        convexity_dphubert.compress_convexity_dphubert(str(teacher_dir), resumed, corpus=synth_corpus, **options)
    assert (resumed / "convexity_dphubert" / "pruned" / "config.json").is_file()
    monkeypatch.setattr(batching, "bucketed_batches", real_batches)
    convexity_dphubert.compress_convexity_dphubert(str(teacher_dir), resumed, corpus=synth_corpus, **options)
    assert peak_at["scorings"] - scorings == 2  # scored once (two label types), not on each resume

    assert_resumed_equals_whole(whole, resumed, "convexity_dphubert", steps=(10, 6))
    assert convexity_dphubert.compress_convexity_dphubert(str(teacher_dir), resumed, corpus=synth_corpus, **options) == resumed
    with pytest.raises(ValueError, match="other settings"):
        convexity_dphubert.compress_convexity_dphubert(str(teacher_dir), resumed, corpus=synth_corpus,
                                                       **{**options, "rule": "plateau"})  # fmt: skip


def test_bad_options_fail_before_any_work(tmp_path):
    for bad in ({"labels": "emotion"}, {"rule": "widest"}, {"preset": "huge"}, {"stage3_steps": 1}):
        with pytest.raises(ValueError):
            convexity_dphubert.compress_convexity_dphubert("unused", tmp_path / "x", corpus="unused", **bad)
    assert not (tmp_path / "x").exists()
