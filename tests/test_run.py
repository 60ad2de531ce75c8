"""``harness run``: the whole pipeline on the micro corpus, resuming, and surviving a failing method."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch

from core.records import load_records
from harness import run as pipeline
from harness.cli import main as harness_main
from harness.compression import registry as methods
from upstreams import tiny_config
from upstreams.checkpoint import save_compact
from upstreams.model import SpeechEncoder


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    torch.manual_seed(0)
    return save_compact(SpeechEncoder(tiny_config("hubert")).eval(), tmp_path_factory.mktemp("t") / "teacher")


def _args(tmp_path, teacher, corpus, methods_="convexity", jobs="1"):
    return ["run", "--jobs", jobs, "--upstream", "pruned_hubert", "--tasks", "sid", "--methods", methods_, "--teacher", str(teacher),
            "--corpus", str(corpus), "--out", str(tmp_path / "out"), "--records", str(tmp_path / "records"),
            "--leaderboard", str(tmp_path / "lb"), "--cache", str(tmp_path / "cache"), "--max-steps", "5"]  # fmt: skip


def test_run_end_to_end_then_resume(synth_corpus, teacher, tmp_path, capsys):
    # two spawned workers: the compression and the reference evaluations overlap
    assert harness_main(_args(tmp_path, teacher, synth_corpus, jobs="2")) == 0
    records = load_records(tmp_path / "records")
    kinds = {(r.upstream["name"], r.compression.get("method")) for r in records}
    assert kinds == {("fbank", None), ("pruned_hubert", None), ("pruned_hubert", "convexity")}
    printed = capsys.readouterr().out
    assert "convexity" in printed and "fbank" in printed  # the leaderboard is printed
    # with one head seed (the README's command) every figure still carries its 95 % interval
    assert "95 % intervals" in printed and re.search(r"\| +\d+\.\d+ \[\d+\.\d+, \d+\.\d+\] +\|", printed)
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.html"):
        assert (tmp_path / "lb" / name).is_file()
    # a rerun finds every step done: no new compression, no new record
    before = sorted(p.name for p in (tmp_path / "records").iterdir())
    stamp = (tmp_path / "out" / "convexity" / "model.safetensors").stat().st_mtime_ns
    assert harness_main(_args(tmp_path, teacher, synth_corpus)) == 0
    assert sorted(p.name for p in (tmp_path / "records").iterdir()) == before
    assert (tmp_path / "out" / "convexity" / "model.safetensors").stat().st_mtime_ns == stamp


def test_a_record_from_an_older_schedule_is_not_reused(synth_corpus, teacher, tmp_path, monkeypatch):
    import dataclasses

    from tasks.sid import SID

    assert harness_main(_args(tmp_path, teacher, synth_corpus)) == 0
    first = {p.name for p in (tmp_path / "records").iterdir()}
    demo = SID.presets["demo"]  # the preset changes (a new version of the harness): every SID result is redone
    monkeypatch.setitem(SID.presets, "demo", dataclasses.replace(demo, train=dataclasses.replace(demo.train, lr=0.02)))
    assert harness_main(_args(tmp_path, teacher, synth_corpus)) == 0
    new = [r for r in load_records(tmp_path / "records") if r.config["train"]["lr"] == 0.02]
    # FBANK, the teacher, the convexity model (and SID's own convexity cut, where the speaker curve cuts)
    assert len({p.name for p in (tmp_path / "records").iterdir()} - first) == len(first) == len(new) >= 3


def _broken_compress(*args, **kwargs):
    raise RuntimeError("out of memory (simulated)")


def test_a_failing_method_does_not_lose_the_others(synth_corpus, teacher, tmp_path, monkeypatch, caplog):
    broken = dataclasses.replace(methods.METHODS.get("dphubert"), entry="test_run:_broken_compress")
    monkeypatch.setattr(methods.METHODS, "_entries", {**methods.METHODS._entries, "dphubert": broken})
    code = harness_main(_args(tmp_path, teacher, synth_corpus, methods_="dphubert,convexity"))
    assert code == 1
    assert "compression dphubert-0.75: RuntimeError: out of memory (simulated)" in caplog.text
    records = load_records(tmp_path / "records")
    assert any(r.compression.get("method") == "convexity" for r in records)
    assert (tmp_path / "lb" / "leaderboard.md").is_file()


def test_bad_options_fail_before_any_work(tmp_path, teacher, synth_corpus):
    assert harness_main(_args(tmp_path, teacher, synth_corpus, methods_="dphubrt")) == 2
    assert harness_main([*_args(tmp_path, teacher, synth_corpus), "--sparsity", "1.5"]) == 2
    assert not (tmp_path / "out").exists()
    jobs = pipeline._compression_jobs(pipeline.RunConfig(methods=["convexity", "dphubert"], sparsities=[0.5, 0.75]))
    assert [job.out.name for job in jobs] == ["convexity", "dphubert-0.5", "dphubert-0.75"]
    assert json.dumps([job.method for job in jobs]) == '["convexity", "dphubert", "dphubert"]'


def test_a_checkpoint_from_another_teacher_is_not_reused(synth_corpus, teacher, tmp_path, caplog):
    assert harness_main(_args(tmp_path, teacher, synth_corpus)) == 0
    assert json.loads((tmp_path / "out" / "convexity" / pipeline.TEACHER_STAMP).read_text())["teacher_sha256"]
    torch.manual_seed(1)  # a retrained teacher: same architecture, other weights
    other = save_compact(SpeechEncoder(tiny_config("hubert")).eval(), tmp_path / "retrained")
    assert harness_main(_args(tmp_path, other, synth_corpus)) == 2
    assert "was compressed from another teacher" in caplog.text and "give another --out" in caplog.text


def test_head_seeds_give_one_record_per_seed_and_an_averaged_table_with_intervals(synth_corpus, teacher, tmp_path):
    assert harness_main([*_args(tmp_path, teacher, synth_corpus), "--head-seeds", "0,1"]) == 0
    records = load_records(tmp_path / "records")
    by_row = {}
    for record in records:
        by_row.setdefault((record.upstream["name"], record.compression.get("method")), set()).add(record.seed)
    assert by_row == {("fbank", None): {0, 1}, ("pruned_hubert", None): {0, 1}, ("pruned_hubert", "convexity"): {0, 1}}
    table = (tmp_path / "lb" / "leaderboard.md").read_text(encoding="utf-8")
    # the all-labels rule keeps every layer of this teacher (no row of its own); SID's speaker cut is compared with it
    assert "head seeds" in table and "95 % intervals" in table and "| sid    | speaker | 1/4" in table
    before = {p.name for p in (tmp_path / "records").iterdir()}
    assert harness_main([*_args(tmp_path, teacher, synth_corpus), "--head-seeds", "1,0"]) == 0  # all done: nothing new
    assert {p.name for p in (tmp_path / "records").iterdir()} == before


def test_an_output_option_naming_a_file_fails_before_any_work(tmp_path, teacher, synth_corpus, caplog):
    (tmp_path / "records-file").write_text("", encoding="utf-8")
    argv = _args(tmp_path, teacher, synth_corpus)
    argv[argv.index("--records") + 1] = str(tmp_path / "records-file")
    assert harness_main(argv) == 2
    assert "--records" in caplog.text and "this is a file" in caplog.text
    assert not (tmp_path / "out").exists()  # nothing was compressed


def test_matched_budgets_give_every_depth_and_dphubert_at_each_size(synth_corpus, teacher, tmp_path, monkeypatch):
    from harness.compression.dphubert import options as dphubert_options

    short = dataclasses.replace(dphubert_options.PRESETS["demo"], stage1_steps=12, stage2_steps=3)
    monkeypatch.setitem(dphubert_options.PRESETS, "demo", short)
    argv = [*_args(tmp_path, teacher, synth_corpus, methods_="convexity,dphubert"), "--budgets", "matched",
            "--sparsity", "0.3"]  # fmt: skip
    assert harness_main(argv) == 0
    compressed = {}
    for record in load_records(tmp_path / "records"):
        info = record.compression
        if info.get("method") and not info.get("cut_for"):  # per-task cuts are checked on their own
            compressed[info["method"], info.get("kept_layers") or info["sparsity"]] = info
    depths = {k: v for (method, k), v in compressed.items() if method == "convexity"}
    assert sorted(depths) == [1, 2, 3]  # every depth 1 .. L-1 of the 4-layer teacher
    assert [depths[k]["selected"] for k in (1, 2, 3)].count(True) <= 1  # the rule's pick is marked
    dphubert = {k: v for (method, k), v in compressed.items() if method == "dphubert"}
    assert 0.3 in dphubert and len(dphubert) == 4  # its own (--sparsity) and one per depth
    for depth in depths.values():  # each depth has a DPHuBERT model of the same size, within 1 %
        closest = min(dphubert.values(), key=lambda d: abs(d["params"] - depth["params"]))
        assert abs(closest["params"] - depth["params"]) <= 0.01 * depth["params"], (depth, closest)
    # a rerun finds the sweep finished and reuses it
    listing = json.loads((tmp_path / "out" / "convexity" / "checkpoints.json").read_text())
    assert listing["checkpoints"] == ["layers-1", "layers-2", "layers-3"]
    before = sorted(p.name for p in (tmp_path / "records").iterdir())
    assert harness_main(argv) == 0
    assert sorted(p.name for p in (tmp_path / "records").iterdir()) == before


def test_matched_budgets_give_every_targeting_method_a_job_at_each_matched_size(teacher):
    names = ["convexity", "dphubert", "distill", "convexity_dphubert"]
    jobs = pipeline._compression_jobs(pipeline.RunConfig(methods=names, budgets="matched", teacher=str(teacher)))
    targets = methods.matched_targets([methods.METHODS.get(name) for name in names], str(teacher))
    assert len(targets) == 4 and 0.75 in targets  # the 3 depths of the 4-layer teacher, and the default
    by_method: dict[str, list] = {}
    for job in jobs:
        by_method.setdefault(job.method, []).append(job)
    assert [job.options for job in by_method["convexity"]] == [{"depths": "all"}]
    for name in ("dphubert", "distill", "convexity_dphubert"):
        assert [job.options for job in by_method[name]] == [{"sparsity": t} for t in targets]
        assert [job.out.name for job in by_method[name]] == [f"{name}-{t:g}" for t in targets]


def test_the_authors_average_gives_the_convexity_methods_their_own_folders(teacher):
    names = ["convexity", "dphubert", "convexity_dphubert"]
    default = pipeline._compression_jobs(pipeline.RunConfig(methods=names, teacher=str(teacher), average="classes"))
    assert [(j.out.name, j.options) for j in default] == [("convexity", {}), ("dphubert-0.75", {"sparsity": 0.75}),
                                                          ("convexity_dphubert-0.75", {"sparsity": 0.75})]  # fmt: skip
    pairs = pipeline._compression_jobs(pipeline.RunConfig(methods=names, teacher=str(teacher), average="pairs"))
    assert [(j.out.name, j.options) for j in pairs] == [
        ("convexity-pairs", {"average": "pairs"}), ("dphubert-0.75", {"sparsity": 0.75}),
        ("convexity_dphubert-0.75-pairs", {"sparsity": 0.75, "average": "pairs"})]  # fmt: skip
    with pytest.raises(ValueError, match="--average 'mean': choose one of classes, pairs"):
        pipeline.check_config(pipeline.RunConfig(methods=names, teacher=str(teacher), average="mean"))


def test_task_cuts_of_the_authors_average_go_beside_its_model(teacher, tmp_path):
    job = pipeline.CompressionJob("convexity", tmp_path / "out" / "convexity-pairs", {"average": "pairs"})
    job.out.mkdir(parents=True)  # the pairs curves peak at state 2 for speakers: SID's cut keeps 2 of 4 layers
    (job.out / "convexity.json").write_text(json.dumps({"speaker": [1.0, 2.0, 9.0, 3.0, 2.0], "selection": {"rule": "peak"}}))
    config = pipeline.RunConfig(tasks=["sid"], teacher=str(teacher), out=tmp_path / "out", average="pairs")
    (cut,) = pipeline._task_cuts(config, job)
    assert cut.label == "convexity-pairs-cuts/sid" and cut.tasks == ("sid",) and cut.features_from is not None
    assert (tmp_path / "out" / "convexity-pairs-cuts" / "sid" / "model.safetensors").is_file()
    assert not (tmp_path / "out" / "convexity-cuts").exists()


def test_the_main_command_runs_only_the_methods_declared_for_it():
    assert pipeline.RunConfig().methods == ["convexity", "dphubert"]
    assert [m for m in methods.METHODS.names() if not methods.METHODS.get(m).in_default_run] == ["convexity_dphubert", "distill"]


def test_each_task_is_also_evaluated_on_its_own_convexity_cut(synth_corpus, teacher, tmp_path, monkeypatch):
    from convexity_fakes import fake_result  # tests/convexity_fakes.py

    from harness.compression.convexity import method as convexity
    from leaderboard.aggregate import build_leaderboard
    from leaderboard.render import to_markdown

    def fake_scores(layers, labels, config):  # speaker information peaks at state 1, words and phones at 3
        peak = 1 if len(set(labels)) == 8 else 3  # micro has 8 speakers
        return [fake_result(100.0 - 10 * abs(i - peak)) for i in range(len(layers))]

    monkeypatch.setattr(convexity, "graph_convexity_per_layer", fake_scores)
    args = _args(tmp_path, teacher, synth_corpus)
    args[args.index("--tasks") + 1] = "sid,asr"
    assert harness_main(args) == 0
    cuts = {r.compression.get("cut_for"): r for r in load_records(tmp_path / "records") if r.compression.get("cut_for")}
    assert set(cuts) == {"sid", "asr"}
    assert cuts["sid"].task.name == "sid" and cuts["sid"].compression["kept_layers"] == 1  # the speaker curve's peak
    assert cuts["asr"].task.name == "asr" and cuts["asr"].compression["labels"] == ["word"]
    assert cuts["asr"].compression["kept_layers"] == 3
    assert (tmp_path / "out" / "convexity-cuts" / "sid" / "model.safetensors").is_file()
    teacher_hash = next(r for r in load_records(tmp_path / "records") if r.upstream["name"] == "pruned_hubert"
                        and not r.compression).upstream["ckpt_sha256"]  # fmt: skip
    for cut in cuts.values():  # truncations: they waited for the teacher and read its cached features
        timing = cut.sections["timing"]
        assert timing["extraction_s"] == 0.0 and set(timing["features_from_sha256"].values()) == {teacher_hash}
    (table,) = build_leaderboard(load_records(tmp_path / "records"))
    assert len(table.frame) == 3  # FBANK, teacher, the all-labels model: cuts are not rows of the table
    assert [c.task for c in table.task_cuts] == ["asr", "sid"] and table.task_cuts[1].difference is not None
    markdown = to_markdown([table])
    assert "### Per-task convexity cuts" in markdown and "| sid    | speaker | 1/4" in markdown


def test_a_rule_that_keeps_every_layer_is_not_evaluated_again(synth_corpus, teacher, tmp_path, monkeypatch, caplog):
    from convexity_fakes import fake_result

    from harness.compression.convexity import method as convexity

    def rising(layers, labels, config):  # convexity grows to the last state: the rule keeps every layer
        return [fake_result(10.0 * i) for i in range(len(layers))]

    monkeypatch.setattr(convexity, "graph_convexity_per_layer", rising)
    with caplog.at_level("INFO", logger="harness.run"):
        assert harness_main(_args(tmp_path, teacher, synth_corpus)) == 0
    assert json.loads((tmp_path / "out" / "convexity" / "convexity.json").read_text())["kept_layers"] == 4
    records = load_records(tmp_path / "records")
    assert {(r.upstream["name"], r.compression.get("method")) for r in records} == {("fbank", None), ("pruned_hubert", None)}
    assert "convexity: keeps every weight of the teacher unchanged" in caplog.text


def test_a_teacher_copy_is_told_from_a_cut_and_from_changed_weights(teacher, tmp_path):
    from upstreams.checkpoint import load_compact, truncation_depth

    model = load_compact(teacher)
    layers = model.config.num_layers
    assert truncation_depth(teacher, teacher) == layers
    assert truncation_depth(save_compact(model.truncate(layers), tmp_path / "full"), teacher) == layers
    assert truncation_depth(save_compact(model.truncate(layers - 1), tmp_path / "cut"), teacher) == layers - 1
    with torch.no_grad():
        next(model.parameters()).add_(1e-3)
    assert truncation_depth(save_compact(model, tmp_path / "changed"), teacher) is None
    assert truncation_depth(save_compact(model.truncate(1), tmp_path / "changed-cut"), teacher) is None


def test_auto_jobs_oversubscribe_a_small_cpu_by_one_and_use_one_worker_with_a_gpu(monkeypatch):
    import os

    from harness.commands.run import _jobs

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert _jobs("auto", "cpu") == 3 and _jobs("2", "cpu") == 2
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert _jobs("auto", "cpu") == 1
    assert _jobs("auto", "cuda") == 1
