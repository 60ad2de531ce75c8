"""distill: the fixed student's size, its initialisation, DistilHuBERT's loss, the recipe's guarantees."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from resume_checks import assert_resumed_equals_whole  # tests/resume_checks.py

from harness import batching, training
from harness.compression import distill
from harness.compression.dphubert import method as dphubert
from upstreams.checkpoint import load_compact, save_compact
from upstreams.model import SpeechEncoder, base_config, tiny_config

FAST = dict(batch_seconds=3.0, crop_seconds=1.0, min_seconds=0.5, save_every=4, stage1_lr=1e-3)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_teacher(seed: int = 0, family: str = "hubert") -> SpeechEncoder:
    torch.manual_seed(seed)
    model = SpeechEncoder(tiny_config(family)).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    return save_compact(tiny_teacher(), tmp_path_factory.mktemp("teacher") / "tiny")


def _meta(out):
    return json.loads((out / "config.json").read_text())["metadata"]["compression"]


def _log(out):
    return [json.loads(line) for line in (out / "distill" / "log.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------- the student
@pytest.mark.parametrize("config", [tiny_config("hubert"), tiny_config("wavlm"), tiny_config("hubert", layer_norm_first=True),
                                    base_config("hubert")], ids=["tiny", "tiny-wavlm", "tiny-pre-ln", "base"])  # fmt: skip
def test_the_student_lands_within_one_percent_under_any_budget(config):
    for sparsity in (0.2, 0.35, 0.5, 0.6, 0.75):
        budget = round((1 - sparsity) * config.num_params())
        depth, heads, units = distill.size_student(config, budget)
        params = distill.student_params(distill.first_layers(config, depth), heads, units)
        assert budget - 0.01 * budget <= params <= budget, (sparsity, depth, heads, units)
        assert all(u <= f for u, f in zip(units, config.ffn_dims, strict=False))
    if config.embed_dim == 768:  # HuBERT Base at 0.75: DistilHuBERT's two whole layers
        assert distill.size_student(config, round(0.25 * config.num_params())) == (2, [12, 12], [3072, 3072])
    with pytest.raises(ValueError, match="cannot hold"):
        distill.size_student(config, 1000)


def test_a_narrowed_student_is_the_masked_truncated_teacher():
    teacher = tiny_teacher()
    depth, heads, units = distill.size_student(teacher.config, round(0.4 * teacher.num_params()))
    assert heads == [4] * depth and sum(units) < 64 * depth  # one layer more than fits whole, with fewer FFN units
    student = distill.build_student(teacher, depth, heads, units)
    assert student.num_params() == distill.student_params(distill.first_layers(teacher.config, depth), heads, units)
    truncated = teacher.truncate(depth)
    masks = {}
    for index, (old, new) in enumerate(zip(truncated.transformer.layers, student.transformer.layers, strict=True)):
        rows = old.feed_forward.intermediate_dense.weight
        kept = [int((rows == row).all(dim=1).nonzero()) for row in new.feed_forward.intermediate_dense.weight]
        score = rows.norm(dim=1) * old.feed_forward.output_dense.weight.norm(dim=0)
        assert set(kept) == set(torch.topk(score, units[index]).indices.tolist())  # the largest units are kept
        masks[f"layer.{index}.ffn_units"] = torch.zeros(rows.shape[0]).index_fill_(0, torch.tensor(kept), 1.0)
    truncated.set_masks(masks)
    waveforms = torch.randn(2, 8000, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        masked, _ = truncated(waveforms)
        compact, _ = student(waveforms)
    for a, b in zip(masked, compact, strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=0)


def test_a_whole_layer_student_starts_as_the_teachers_first_layers():
    teacher = tiny_teacher()
    budget = teacher.truncate(2).num_params()
    depth, heads, units = distill.size_student(teacher.config, budget)
    student = distill.build_student(teacher, depth, heads, units)
    assert (depth, student.config.ffn_dims) == (2, [64, 64])
    waveforms = torch.randn(1, 6000, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours, _ = student(waveforms)
        theirs, _ = teacher(waveforms)
    for a, b in zip(ours, theirs[:3], strict=True):
        torch.testing.assert_close(a, b)


def test_prediction_loss_is_l1_minus_log_sigmoid_cosine_summed_over_heads():
    generator = torch.Generator().manual_seed(3)
    student = [torch.randn(2, 5, 8, generator=generator) for _ in range(3)]
    teacher = [torch.randn(2, 5, 8, generator=generator) for _ in range(3)]
    loss, l1, cosine = distill.prediction_loss(student, teacher)
    expected = sum((s - t).abs().mean() - F.logsigmoid(F.cosine_similarity(s, t, dim=-1)).mean()
                   for s, t in zip(student, teacher, strict=True))  # fmt: skip
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    assert l1 == pytest.approx(float(sum((s - t).abs().mean() for s, t in zip(student, teacher, strict=True)) / 3), rel=1e-6)
    assert -1 <= cosine <= 1
    assert distill.distilled_states("prediction", None, 12, 2) == ([4, 8, 12], [2, 2, 2])  # DistilHuBERT's heads
    assert distill.distilled_states("layer2layer", None, 12, 2) == ([0, 4, 8, 12], [0, 1, 1, 2])


# ---------------------------------------------------------------------- the recipe
@pytest.mark.parametrize("loss", ["prediction", "layer2layer"])
def test_short_run_meets_the_budget_on_dphuberts_batches_and_loads_in_s3prl(loss, synth_corpus, teacher_dir, tmp_path, monkeypatch):
    real_batches, seen = batching.bucketed_batches, {}

    def recording(*args, **kwargs):
        for batch in real_batches(*args, **kwargs):
            seen.setdefault(recording.method, []).append(batch)
            yield batch

    monkeypatch.setattr(batching, "bucketed_batches", recording)
    options = dict(preset="demo", device="cpu", sparsity=0.45, stage1_steps=5, stage2_steps=3, measure_cost=False, **FAST)
    recording.method = "distill"
    out = distill.compress_distill(str(teacher_dir), tmp_path / "distill", corpus=synth_corpus, loss=loss, **options)
    teacher, compact = load_compact(teacher_dir), load_compact(out)
    budget = round(0.55 * teacher.num_params())
    assert budget - 0.01 * budget <= compact.num_params() <= budget
    meta = _meta(out)
    assert meta["method"] == "distill" and meta["teacher"] == str(teacher_dir) and meta["sparsity"] == 0.45
    assert meta["params"] == compact.num_params() and meta["teacher_params"] == teacher.num_params()
    assert meta["achieved_sparsity"] == pytest.approx(0.45, abs=0.006) and meta["budget"] == budget
    assert meta["kept_layers"] == meta["student"]["layers"] == compact.config.num_layers == 2 and meta["teacher_layers"] == 4
    assert meta["loss"] == loss and meta["student"]["ffn_dims"] == compact.config.ffn_dims
    assert [(e["stage"], e["step"]) for e in _log(out)] == [(1, s) for s in range(1, 6)] + [(2, s) for s in range(1, 4)]
    assert not (out / "distill" / "stage1.pt").exists()
    if loss == "layer2layer":
        return
    # DPHuBERT at the same budget and preset sees the same batches, stage by stage
    recording.method = "dphubert"
    dphubert.compress_dphubert(str(teacher_dir), tmp_path / "dp", corpus=synth_corpus, reg_lr=0.05, **options)
    assert seen["distill"] == seen["dphubert"] and len(seen["distill"]) == 8
    from s3prl.nn import S3PRLUpstream

    import upstreams

    upstreams.register()
    upstream = S3PRLUpstream("pruned_hubert", path_or_url=str(out)).eval()
    with torch.no_grad():
        hidden, _ = upstream(torch.randn(2, 16000), torch.tensor([16000, 12000]))
    assert len(hidden) == compact.config.num_layers + 1


def test_killed_run_resumes_to_the_same_result(synth_corpus, teacher_dir, tmp_path, monkeypatch):
    options = dict(preset="demo", device="cpu", sparsity=0.6, stage1_steps=10, stage2_steps=6, measure_cost=False, **FAST)
    whole = distill.compress_distill(str(teacher_dir), tmp_path / "whole", corpus=synth_corpus, **options)
    real_batches = batching.bucketed_batches

    def killed_at(stage, index):
        def batches(*args, **kwargs):
            for i, batch in enumerate(real_batches(*args, **kwargs)):
                if args[4] // 7919 == stage and i == index:  # the batch seed (0 + 7919 x stage) says which stage asks
                    raise KeyboardInterrupt
                yield batch

        return batches

    resumed = tmp_path / "resumed"
    # killed after stage 1's first resume point, in stage 2 before its first, then after it
    for stage, index, saved in ((1, 6, "stage1.pt"), (2, 3, None), (2, 5, "stage2.pt")):
        monkeypatch.setattr(batching, "bucketed_batches", killed_at(stage, index))
        with pytest.raises(KeyboardInterrupt):
            distill.compress_distill(str(teacher_dir), resumed, corpus=synth_corpus, **options)
        if saved:
            assert training.load_state(resumed / "distill" / saved)["step"] == 4
        else:
            assert not (resumed / "distill" / "stage2.pt").exists()
    monkeypatch.setattr(batching, "bucketed_batches", real_batches)
    distill.compress_distill(str(teacher_dir), resumed, corpus=synth_corpus, **options)

    assert_resumed_equals_whole(whole, resumed, "distill", steps=(10, 6))
    assert distill.compress_distill(str(teacher_dir), resumed, corpus=synth_corpus, **options) == resumed
    with pytest.raises(ValueError, match="other settings"):
        distill.compress_distill(str(teacher_dir), resumed, corpus=synth_corpus, **{**options, "loss": "layer2layer"})


def test_options_are_dphuberts_schedule_and_pruning_options_are_refused():
    from harness.compression.distill_options import SCHEDULE_FIELDS, resolve_schedule

    config = resolve_schedule("paper", 0.6, {"stage1_steps": 7, "threads": None})
    assert (config.sparsity, config.stage1_steps, config.stage2_steps) == (0.6, 7, dphubert.PRESETS["paper"].stage2_steps)
    for pruning in ({"reg_lr": 0.1}, {"prune": ["heads"]}, {"sparsity_warmup": 0.2}, {"labels": "all"}):
        with pytest.raises(ValueError, match="unknown distill options"):
            resolve_schedule("demo", 0.75, pruning)
    assert "reg_lr" not in SCHEDULE_FIELDS and "stage2_steps" in SCHEDULE_FIELDS
    with pytest.raises(ValueError, match="--loss"):
        distill.compress_distill("unused", "unused", corpus="unused", loss="mse")
