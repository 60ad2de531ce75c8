"""DPHuBERT: HardConcrete gates, the differentiable size, the exact budget, the recipe's guarantees."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from resume_checks import assert_resumed_equals_whole  # tests/resume_checks.py

from harness import batching, training
from harness.compression.dphubert import method as dphubert
from harness.compression.dphubert.hardconcrete import EncoderGates, HardConcrete
from upstreams.checkpoint import load_compact, save_compact
from upstreams.model import SpeechEncoder, tiny_config

BETA, LEFT, RIGHT = 2 / 3, -0.1, 1.1
FAST = dict(batch_seconds=3.0, crop_seconds=1.0, min_seconds=0.5, save_every=4, stage1_lr=1e-3, reg_lr=0.05)


def tiny_teacher(seed: int = 0, family: str = "hubert") -> SpeechEncoder:
    torch.manual_seed(seed)
    model = SpeechEncoder(tiny_config(family)).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "tiny"
    save_compact(tiny_teacher(), path)
    return path


# ---------------------------------------------------------------------- HardConcrete
def test_hardconcrete_init_and_sample_range():
    generator = torch.Generator().manual_seed(0)
    for init_mean in (0.01, 0.5):
        gate = HardConcrete(4000, init_mean=init_mean, generator=generator)
        assert gate.log_alpha.mean().item() == pytest.approx(math.log((1 - init_mean) / init_mean), abs=2e-3)
        assert gate.log_alpha.std().item() == pytest.approx(0.01, rel=0.1)
    gate = HardConcrete(20_000, init_mean=0.5, generator=generator)
    z = gate.train().sample()
    assert z.min() >= 0 and z.max() <= 1
    # the stretch gives exact zeros and ones some mass, and the rest lies strictly between
    assert 0.01 < (z == 0).float().mean() < 0.5 and 0.01 < (z == 1).float().mean() < 0.9
    assert ((z > 0) & (z < 1)).float().mean() > 0.2
    z.sum().backward()
    assert gate.log_alpha.grad is not None and gate.log_alpha.grad.abs().sum() > 0


def test_l0_norm_is_the_probability_of_a_non_zero_gate():
    generator = torch.Generator().manual_seed(1)
    gate = HardConcrete(5, generator=generator)
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor([-3.0, -1.0, 0.0, 1.0, 3.0]))
    expected = torch.sigmoid(gate.log_alpha - BETA * math.log(-LEFT / RIGHT))
    assert gate.l0_norm().item() == pytest.approx(expected.sum().item(), rel=1e-6)
    samples = torch.stack([gate.sample() for _ in range(20_000)]).detach()
    torch.testing.assert_close((samples > 0).float().mean(0), expected.detach(), atol=0.015, rtol=0)


def test_eval_rule_zeros_round_n_minus_l0_smallest_and_keeps_soft_values():
    gate = HardConcrete(10, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor([4.0, -6, 2, -5, 0.5, -4, 3, -0.5, 1, -7]))
    gate.eval()
    l0 = float(gate.l0_norm().detach())
    zeros = round(10 - l0)
    assert gate.num_zeros() == zeros and 0 < zeros < 10
    values = gate()
    scores = torch.sigmoid(gate.log_alpha / BETA * 0.8).detach()
    smallest = set(torch.argsort(scores)[:zeros].tolist())
    assert {i for i in range(10) if values[i] == 0} == smallest
    kept = [i for i in range(10) if i not in smallest]
    torch.testing.assert_close(values[kept], scores[kept])
    assert torch.equal(gate(), values)  # deterministic


# ---------------------------------------------------------------------- sizes
@pytest.mark.parametrize("family", ["hubert", "wavlm"])
def test_expected_params_is_differentiable_and_exact_for_hard_gates(family):
    model = tiny_teacher(family=family)
    gates = EncoderGates(model.config, blocks=True, generator=torch.Generator().manual_seed(3))
    expected = gates.expected_num_params()
    expected.backward()
    assert all(gates.gate(n).log_alpha.grad is not None for n in gates.names)
    with torch.no_grad():  # every gate surely open: the teacher's count (+ the extractor output scale)
        for name in gates.names:
            gates.gate(name).log_alpha.fill_(30.0)
    assert gates.expected_num_params().item() == pytest.approx(model.num_params() + model.config.conv_channels[-1])
    generator = torch.Generator().manual_seed(4)
    for trial in range(3):
        masks = {}
        for name in gates.names:
            n = gates.gate(name).n
            hard = (torch.rand(n, generator=generator) < 0.6).float()
            if name.startswith("conv."):
                hard[0] = 1.0
            if n == 1 and trial == 0:
                hard[:] = 1.0
            masks[name] = hard.reshape(()) if name.endswith((".attention", ".ffn")) else hard
        model.set_masks(masks)
        compact = model.prune()
        model.clear_masks()
        assert gates.num_params(masks) == compact.num_params()
        # the differentiable formula at the same 0/1 values: kept counts as expected counts
        from upstreams.config import expected_num_params

        counts = {name: torch.tensor(float(value.sum()), requires_grad=True) for name, value in masks.items()}
        assert float(expected_num_params(model.config, counts).detach()) == compact.num_params()


def test_projection_meets_the_budget_within_one_ffn_unit():
    model = tiny_teacher()
    gates = EncoderGates(model.config, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        for name in gates.names:
            gates.gate(name).log_alpha.normal_(0.0, 3.0, generator=torch.Generator().manual_seed(len(name)))
    masks = gates.deterministic_masks()
    for fraction in (0.25, 0.5, 0.9):
        budget = round(fraction * model.num_params())
        projected, summary = gates.project_to_budget(masks, budget)
        params = gates.num_params(projected)
        assert params == summary["params_after"] <= budget
        assert budget - params <= 2 * model.config.embed_dim + 1
        model.set_masks(projected)
        assert model.prune().num_params() == params
        model.clear_masks()


# ---------------------------------------------------------------------- the recipe
def _log(out):
    return [json.loads(line) for line in (out / "dphubert" / "log.jsonl").read_text().splitlines()]


def test_short_run_reaches_target_sparsity_and_loads_in_s3prl(synth_corpus, teacher_dir, tmp_path):
    out = tmp_path / "dp"
    dphubert.compress_dphubert(str(teacher_dir), out, corpus=synth_corpus, preset="demo", device="cpu", sparsity=0.7,
                               stage1_steps=16, stage2_steps=4, measure_cost=False, **FAST)  # fmt: skip
    teacher = load_compact(teacher_dir)
    compact = load_compact(out)
    target = (1 - 0.7) * teacher.num_params()
    assert abs(compact.num_params() - target) <= 0.01 * target
    meta = json.loads((out / "config.json").read_text())["metadata"]["compression"]
    assert meta["method"] == "dphubert" and meta["teacher"] == str(teacher_dir) and meta["sparsity"] == 0.7
    assert meta["params"] == compact.num_params() and meta["teacher_params"] == teacher.num_params()
    assert meta["achieved_sparsity"] == pytest.approx(0.7, abs=0.003) and meta["dir"] == str(out)
    assert meta["compact_vs_masked_max_abs_diff"] < 1e-4
    log = _log(out)
    assert [e["step"] for e in log if e["stage"] == 1] == list(range(1, 17))
    assert [e["step"] for e in log if e["stage"] == 2] == list(range(1, 5))
    first = log[0]
    for key in ("distill", "expected_sparsity", "target_sparsity", "lambda1", "lambda2", "lr"):
        assert key in first
    assert first["target_sparsity"] == 0 and log[15]["target_sparsity"] == pytest.approx(0.7)
    assert log[15]["expected_sparsity"] > log[0]["expected_sparsity"]  # the Lagrangian pushes towards the target
    assert log[15]["lambda1"] < 0  # ascent: s_hat below target drives lambda1 down, which raises sparsity
    assert not (out / "dphubert" / "stage1.pt").exists()  # resume points are removed when done
    from s3prl.nn import S3PRLUpstream

    import upstreams

    upstreams.register()
    upstream = S3PRLUpstream("pruned_hubert", path_or_url=str(out)).eval()
    with torch.no_grad():
        hidden, _ = upstream(torch.randn(2, 16000), torch.tensor([16000, 12000]))
    assert len(hidden) == compact.config.num_layers + 1


@pytest.mark.parametrize("family", ["wavlm", "wav2vec2"])
def test_other_families_and_large_style_extractors(family, synth_corpus, tmp_path):
    torch.manual_seed(0)
    large_style = family == "wav2vec2"  # layer-norm extractor: its conv channels are left alone by default
    config = tiny_config(family, layer_norm_first=large_style, normalize_waveform=large_style)
    teacher = save_compact(SpeechEncoder(config).eval(), tmp_path / "teacher")
    out = dphubert.compress_dphubert(str(teacher), tmp_path / "out", corpus=synth_corpus, preset="demo", device="cpu",
                                     sparsity=0.6, stage1_steps=6, stage2_steps=2, measure_cost=False, **FAST)  # fmt: skip
    meta = json.loads((out / "config.json").read_text())["metadata"]["compression"]
    assert abs(meta["achieved_sparsity"] - 0.6) < 0.004 and meta["compact_vs_masked_max_abs_diff"] < 1e-4
    compact = load_compact(out)
    assert compact.config.family == family
    assert (compact.config.conv_channels == config.conv_channels) == large_style


def test_compact_model_equals_masked_model(teacher_dir):
    teacher = load_compact(teacher_dir)
    gates = EncoderGates(teacher.config, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():  # a trained-looking spread of gate values
        for name in gates.names:
            gates.gate(name).log_alpha.uniform_(-4, 4, generator=torch.Generator().manual_seed(len(name) + 7))
    student = dphubert.DistillStudent(dphubert.student_from_teacher(teacher, 0.0), [0, 1, 3, 4], gates)
    config = dphubert.resolve_config("demo", 0.6, {})
    budget = round(0.4 * teacher.num_params())
    compact, summary = dphubert.prune_student(student, budget, config, torch.randn(2, 8000))
    assert summary["compact_vs_masked_max_abs_diff"] < 1e-4
    assert abs(compact.num_params() - budget) <= 0.01 * budget
    assert compact.config.num_heads == summary["kept"]["heads"] and 0 < sum(compact.config.ffn_dims) < 4 * 64
    # independently, on other audio: the masked student (eval gates) against the compact model
    masks, _ = dphubert.final_masks(gates, budget, config)
    assert any(0 < float(v.max()) < 1 for v in masks.values())  # soft kept values get folded
    student.encoder.eval().set_masks(masks)
    waveforms = torch.randn(3, 12000, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        masked, _ = student.encoder(waveforms)
        pruned, _ = compact.eval()(waveforms)
    for a, b in zip(masked, pruned, strict=True):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=0)


def test_cost_of_a_model_with_bias_only_blocks_is_recorded(tmp_path, caplog):
    """Zero heads / zero FFN units once made the MAC counter fail, leaving the checkpoint without cost.json."""
    teacher = tiny_teacher()
    shapes = teacher.mask_shapes()
    teacher.set_masks({"layer.0.heads": torch.zeros(shapes["layer.0.heads"]),
                       "layer.2.ffn_units": torch.zeros(shapes["layer.2.ffn_units"])})  # fmt: skip
    compact = teacher.prune()
    with caplog.at_level("WARNING", logger=dphubert.logger.name):
        dphubert._record_cost(compact, tmp_path)
    assert "could not measure the cost" not in caplog.text
    assert json.loads((tmp_path / "cost.json").read_text())["macs"] > 0


def test_killed_run_resumes_to_the_same_result(synth_corpus, teacher_dir, tmp_path, monkeypatch):
    options = dict(preset="demo", device="cpu", sparsity=0.6, stage1_steps=10, stage2_steps=6, measure_cost=False, **FAST)
    whole = dphubert.compress_dphubert(str(teacher_dir), tmp_path / "whole", corpus=synth_corpus, **options)

    real_batches = batching.bucketed_batches
    calls = {"n": 0}

    def killed_in_stage_2(*args, **kwargs):
        calls["n"] += 1
        for i, batch in enumerate(real_batches(*args, **kwargs)):
            if calls["n"] == 2 and i == 3:  # stage 2 before its first resume point: it restarts
                raise KeyboardInterrupt
            yield batch

    def killed_in_stage_1(*args, **kwargs):
        for i, batch in enumerate(real_batches(*args, **kwargs)):
            if i == 6:  # saved at step 4; steps 5-6 are redone
                raise KeyboardInterrupt
            yield batch

    resumed = tmp_path / "resumed"
    monkeypatch.setattr(batching, "bucketed_batches", killed_in_stage_1)
    with pytest.raises(KeyboardInterrupt):
        dphubert.compress_dphubert(str(teacher_dir), resumed, corpus=synth_corpus, **options)
    assert training.load_state(resumed / "dphubert" / "stage1.pt")["step"] == 4
    monkeypatch.setattr(batching, "bucketed_batches", killed_in_stage_2)
    with pytest.raises(KeyboardInterrupt):
        dphubert.compress_dphubert(str(teacher_dir), resumed, corpus=synth_corpus, **options)
    assert (resumed / "dphubert" / "pruned" / "config.json").is_file()  # the stage boundary was saved
    monkeypatch.setattr(batching, "bucketed_batches", real_batches)
    dphubert.compress_dphubert(str(teacher_dir), resumed, corpus=synth_corpus, **options)

    assert_resumed_equals_whole(whole, resumed, "dphubert", steps=(10, 6))
    # a finished run is not redone; other settings are refused
    assert dphubert.compress_dphubert(str(teacher_dir), resumed, corpus=synth_corpus, **options) == resumed
    with pytest.raises(ValueError, match="other settings"):
        dphubert.compress_dphubert(str(teacher_dir), resumed, corpus=synth_corpus, **{**options, "sparsity": 0.5})


DDP_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch, torch.distributed as dist
    from harness import training
    from harness.compression.dphubert import method as dphubert
    from harness.compression.dphubert.hardconcrete import EncoderGates
    from upstreams.checkpoint import load_compact

    teacher_dir, corpus, out = sys.argv[1:4]
    runtime = training.setup_runtime("cpu")
    teacher = load_compact(teacher_dir).requires_grad_(False)
    config = dphubert.resolve_config("demo", 0.5, {})
    stage = dphubert.Stage(1, 10, 1e-3, 0.1, prune=True)

    def build():
        gen = torch.Generator().manual_seed(0)
        gates = EncoderGates(teacher.config, generator=gen)
        student = dphubert.DistillStudent(dphubert.student_from_teacher(teacher, 0.0), [0, 2, 4], gates)
        lambdas = torch.nn.Parameter(torch.tensor([0.3, 0.1]))
        return student, lambdas, dphubert.build_optimizer(student, lambdas, stage, config)

    batches = torch.randn(2, 2, 8000, generator=torch.Generator().manual_seed(1))
    student, lambdas, optimizer = build()
    ddp = torch.nn.parallel.DistributedDataParallel(student)
    for _ in range(2):
        dphubert.distill_step(ddp, student, teacher, batches[runtime.rank], optimizer, lambdas, 0.4,
                              teacher.num_params(), 10.0, runtime)
    flat = torch.cat([p.detach().flatten() for p in student.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(2)]
    dist.all_gather(gathered, flat)
    result = {"ranks_agree": float((gathered[0] - gathered[1]).abs().max())}
    if runtime.rank == 0:
        single, single_lambdas, single_optimizer = build()
        for _ in range(2):
            dphubert.distill_step(single, single, teacher, batches.reshape(4, 8000), single_optimizer,
                                  single_lambdas, 0.4, teacher.num_params(), 10.0, runtime)
        grads = [(p.grad, q.grad) for p, q in zip(student.parameters(), single.parameters()) if p.grad is not None]
        scale = max(float(q.abs().max()) for _, q in grads)
        result["grad_diff"] = max(float((p - q).abs().max()) for p, q in grads) / scale
        result["param_diff"] = max(float((p - q).abs().max()) for p, q in zip(student.parameters(), single.parameters()))
        result["lambda_diff"] = float((lambdas - single_lambdas).abs().max())
    # the whole recipe on two processes
    dphubert.compress_dphubert(teacher_dir, out, corpus=corpus, preset="demo", device="cpu", sparsity=0.5,
                               stage1_steps=4, stage2_steps=2, measure_cost=False, batch_seconds=2.0,
                               crop_seconds=1.0, min_seconds=0.5)
    if runtime.rank == 0:
        print("RESULT", json.dumps(result))
    """
)


def test_ddp_on_cpu_matches_one_process_on_the_combined_batch(synth_corpus, teacher_dir, tmp_path):
    script = tmp_path / "ddp_check.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "ddp_out"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(script), str(teacher_dir), str(synth_corpus), str(out)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT", 1)[1])
    assert result["ranks_agree"] == 0.0
    assert result["grad_diff"] < 1e-4
    assert result["param_diff"] < 1e-5 and result["lambda_diff"] < 1e-6
    meta = json.loads((out / "config.json").read_text())["metadata"]["compression"]
    assert meta["world_size"] == 2 and abs(meta["achieved_sparsity"] - 0.5) < 0.01
    assert {e["stage"] for e in _log(out)} == {1, 2}


# ---------------------------------------------------------------------- options
def test_options_and_presets():
    import argparse

    parser = argparse.ArgumentParser()
    dests = dphubert.add_arguments(parser)
    fields = {f.name for f in dataclasses.fields(dphubert.DPHuBERTConfig)}
    assert set(dests) <= fields and set(vars(parser.parse_args([]))) == set(dests)  # every option is a config field
    args = vars(parser.parse_args(["--sparsity", "0.5", "--stage1-steps", "7", "--distill-layers", "0,2,4"]))
    sparsity = args.pop("sparsity")
    config = dphubert.resolve_config("paper", sparsity, args)
    assert config.sparsity == 0.5 and config.stage1_steps == 7 and config.distill_layers == [0, 2, 4]
    assert config.stage2_steps == 25_000 and config.reg_lr == 0.02 and config.stage1_lr == 2e-4
    with pytest.raises(SystemExit):
        parser.parse_args(["--distill-layers", "0,four"])
    for foreign in ({"stage3_steps": 1}, {"labels": "all"}):  # never silently dropped
        with pytest.raises(ValueError, match="unknown DPHuBERT options"):
            dphubert.resolve_config("demo", 0.75, foreign)
    with pytest.raises(ValueError, match="unknown DPHuBERT preset"):
        dphubert.resolve_config("huge", 0.75, {})
    with pytest.raises(ValueError, match="sparsity"):
        dphubert.resolve_config("demo", 1.5, {})
    assert dphubert.default_distill_layers(12) == [0, 4, 8, 12]
    assert dphubert.default_distill_layers(6) == [0, 2, 4, 6]


def test_compress_command_passes_every_dphubert_option(tmp_path, monkeypatch, caplog):
    from harness.cli import main as harness_main
    from harness.compression.registry import METHODS

    calls = []

    def fake_compress(teacher, out, **kwargs):
        calls.append(kwargs)
        return out

    real_get = METHODS.get

    class FakeMethod:  # the registry entry, with its compress function replaced
        def __init__(self, method):
            self.method = method

        def __getattr__(self, name):
            return getattr(self.method, name)

        compress = staticmethod(fake_compress)

    monkeypatch.setattr(METHODS, "get", lambda name: FakeMethod(real_get(name)))
    (tmp_path / "corpus.json").write_text("{}")  # resolve_corpus only checks that the corpus is prepared
    common = ["--corpus", str(tmp_path), "--out", str(tmp_path / "out")]
    argv = ["compress", "--method", "dphubert", "--stage1-steps", "3", "--save-every", "2", "--stage2-lr", "1e-3",
            "--distill-layers", "0,2", "--prune", "heads,ffn_units", "--prune-blocks", "--threads", "1", *common]  # fmt: skip
    assert harness_main(argv) == 0
    kwargs = calls.pop()
    options = {k: v for k, v in kwargs.items() if k not in ("corpus", "preset", "device")}
    assert options == {"seed": 0, "stage1_steps": 3, "save_every": 2, "stage2_lr": 1e-3, "distill_layers": [0, 2],
                       "prune": ["heads", "ffn_units"], "prune_blocks": True, "threads": 1}  # fmt: skip
    assert kwargs["preset"] == "demo" and "sparsity" not in kwargs  # unset: compress_dphubert's default
    config = dphubert.resolve_config(kwargs["preset"], 0.75, options)  # the names are the config's fields
    assert (config.stage1_steps, config.save_every, config.stage2_lr, config.prune_blocks) == (3, 2, 1e-3, True)
    assert config.stage2_steps == dphubert.PRESETS["demo"].stage2_steps

    assert harness_main(["compress", "--method", "convexity", "--labels", "word", "--cache", str(tmp_path / "cache"), *common]) == 0
    assert calls.pop() == {"corpus": tmp_path, "preset": "demo", "device": "auto", "seed": 0, "labels": "word",
                           "scores_cache": tmp_path / "cache" / "convexity"}  # --cache
    with caplog.at_level("ERROR"):  # an option of the other method is refused, naming it
        assert harness_main(["compress", "--method", "convexity", "--stage1-steps", "3", *common]) == 2
        assert harness_main(["compress", "--method", "dphubert", "--rule", "peak", *common]) == 2
    assert "--method convexity does not take --stage1-steps" in caplog.text
    assert "--method dphubert does not take --rule" in caplog.text and not calls


def test_bucketed_batches_resume_and_split_between_processes():
    lengths = [int(x) for x in np.random.default_rng(0).integers(8000, 48000, size=40)]
    whole = list(zip(range(30), batching.bucketed_batches(lengths, 64000, 32000, 320, seed=3), strict=False))
    later = batching.bucketed_batches(lengths, 64000, 32000, 320, seed=3, start=17)
    assert [next(later) for _ in range(13)] == [b for _, b in whole[17:]]
    for batch in (b for _, b in whole):
        size = batch[0][2]
        assert all(n == size and start % 320 == 0 and start + n <= lengths[i] for i, start, n in batch)
        assert len(batch) * size <= 64000 or len(batch) == 1
    rank0 = batching.bucketed_batches(lengths, 64000, 32000, 320, seed=3, rank=0, world_size=2)
    rank1 = batching.bucketed_batches(lengths, 64000, 32000, 320, seed=3, rank=1, world_size=2)
    first0, first1 = next(rank0), next(rank1)
    assert {i for i, _, _ in first0}.isdisjoint({i for i, _, _ in first1})
