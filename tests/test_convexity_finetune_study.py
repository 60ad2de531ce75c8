"""The fine-tuning study: per task its convexity cut against the full teacher, with paired intervals
and the paper's claims beside (studies/finetune_table.py, studies/convexity_finetune.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import torch

from harness import finetune
from harness.compression.convexity.method import LayerScores
from studies import convexity_finetune
from studies.finetune_table import Report, build_study, load_report, to_csv, to_markdown
from upstreams import tiny_config
from upstreams.checkpoint import save_compact
from upstreams.model import SpeechEncoder

REPO = Path(__file__).resolve().parents[1]
CUTS = {"sid": {"label": "speaker", "kept_layers": 2, "teacher_layers": 4},
        "asr": {"label": "word", "kept_layers": 4, "teacher_layers": 4}}  # fmt: skip


def report(seed: int, cut_correct: list[int], full_correct: list[int], cut_s: float = 6.0, full_s: float = 10.0) -> dict:
    def model(correct, layers, params, train_s):
        return {"num_layers": layers, "params": params, "best_step": 20,
                "per_utterance": {"ids": [f"u{i}" for i in range(len(correct))], "numerator": correct, "denominator": [1] * len(correct)},
                "training": {"train_s": train_s}, "inference": {"inference_s_per_audio_s": train_s / 1000},
                "history": [{"step": 10, "valid_accuracy": 50.0}, {"step": 20, "valid_accuracy": 60.0}]}  # fmt: skip

    return {"task": {"name": "sid", "main_metric": "accuracy", "higher_is_better": True}, "seeds": {"train": seed}, "schedule": {"steps": 20},
            "device": {"type": "cpu"}, "models": {"pruned": model(cut_correct, 2, 600, cut_s), "full": model(full_correct, 4, 1000, full_s)}}  # fmt: skip


def test_equal_models_differ_by_nothing_and_a_task_without_a_cut_says_so():
    correct = [1, 0, 1, 1, 0, 1, 1, 1, 0, 1] * 5
    rows = build_study(CUTS, [report(0, correct, correct), report(1, correct, correct)])
    sid, asr = rows
    assert sid.value == {"cut": 70.0, "full": 70.0} and sid.difference == 0.0 and sid.difference_interval == (0.0, 0.0)
    assert sid.accuracy_verdict == "no significant difference" and sid.seeds == [0, 1]
    assert sid.train_ratio == [0.6, 0.6] and sid.params == {"cut": 600, "full": 1000} and sid.steps == 20
    assert not asr.has_cut and not asr.seeds
    markdown = to_markdown(rows)
    assert "40 % less [40, 40]" in markdown and "40 % fewer" in markdown
    assert "the word curve keeps every layer: no cut to fine-tune" in markdown
    assert "paper: 20-50 % less training time; here: sid 40 % less [40, 40]" in markdown


def test_a_clearly_worse_cut_is_significantly_worse_and_a_slower_one_takes_more_time():
    full = [1] * 45 + [0] * 5
    cut = [1] * 20 + [0] * 30
    (sid, _) = build_study(CUTS, [report(0, cut, full, cut_s=11.0), report(1, cut, full, cut_s=12.0)])
    assert sid.difference == pytest.approx(-50.0) and sid.difference_interval[1] < 0
    assert sid.accuracy_verdict == "the cut is significantly worse"
    low, high = sid.spread["cut"]
    assert low < 40.0 < high < sid.spread["full"][0]  # the two intervals do not overlap
    assert "15 % more [10, 20]" in to_markdown([sid])
    frame = pd.read_csv(__import__("io").StringIO(to_csv([sid])))
    assert frame.loc[0, "cut accuracy"] == pytest.approx(40.0) and frame.loc[0, "cut − full 95% high"] < 0


def _load_script():
    return convexity_finetune


@pytest.mark.usefixtures("one_torch_thread")
def test_the_study_cuts_per_task_fine_tunes_both_and_resumes(synth_corpus, tmp_path, monkeypatch):
    torch.manual_seed(0)
    teacher = save_compact(SpeechEncoder(tiny_config("hubert")).eval(), tmp_path / "teacher")  # 4 layers
    script = _load_script()

    def scores(*args, **kwargs):  # speaker convexity peaks at layer 2, word at the last: sid is cut, slu is not
        return LayerScores({"speaker": [10.0, 30.0, 50.0, 40.0, 35.0], "word": [10.0, 20.0, 30.0, 40.0, 50.0]}, {}, {}, {})

    monkeypatch.setattr(script, "cached_score_layers", scores)
    argv = ["--teacher", str(teacher), "--corpus", str(synth_corpus), "--tasks", "sid,slu", "--seeds", "0,1",
            "--steps", "3", "--task-steps", "sid=4", "--eval-every", "2", "--out", str(tmp_path / "out"), "--publish", str(tmp_path / "pub"),
            "--cache", str(tmp_path / "cache")]  # fmt: skip
    script.main(argv)
    study = json.loads((tmp_path / "pub" / "study.json").read_text())
    assert study["cuts"]["sid"]["kept_layers"] == 2 and study["cuts"]["slu"]["checkpoint"] is None
    sid = json.loads((tmp_path / "pub" / "runs" / "sid" / "seed-1" / "finetune-sid.json").read_text())
    assert sid["models"]["pruned"]["num_layers"] == 2 and sid["models"]["full"]["num_layers"] == 4
    assert sid["seeds"] == {"train": 1} and sid["schedule"]["steps"] == 4 == study["schedules"]["sid"]["steps"]
    assert len(sid["models"]["pruned"]["per_utterance"]["ids"]) == sid["corpus"]["utterances"]["test"]
    assert not (tmp_path / "pub" / "runs" / "sid" / "seed-1" / "finetuned-sid").exists()  # reports only: publishable
    table = (tmp_path / "pub" / "table.md").read_text()
    assert "| sid " in table and "speaker: 2/4" in table and "the word curve keeps every layer" in table
    assert (tmp_path / "pub" / "curves.png").stat().st_size > 0
    assert set(study["report_devices"]) == {"sid/seed-0", "sid/seed-1"} and study["report_devices"]["sid/seed-1"] == sid["device"]
    assert not list((tmp_path / "out" / "state").rglob("*.pt"))  # the pairs' resume states go once they are reported

    # a rerun finds every report and fine-tunes nothing
    monkeypatch.setattr(finetune, "finetune_models", lambda *a, **k: pytest.fail("retrained"))
    script.main(argv)
    # --table-only trains no missing pair (seed 2) and tabulates the reports there
    script.main([*argv, "--seeds", "0,1,2", "--table-only"])
    assert not (tmp_path / "pub" / "runs" / "sid" / "seed-2").exists()
    rows = json.loads((tmp_path / "pub" / "study.json").read_text())["rows"]
    assert [r["task"] for r in rows] == ["sid", "slu"] and len(rows[0]["best_steps"]["cut"]) == 2  # seeds 0 and 1

    with pytest.raises(ValueError, match="--cut-labels 'sid=colour'"):
        script.main([*argv, "--cut-labels", "sid=colour"])
    with pytest.raises(ValueError, match="--task-steps 'pr=5': give TASK=N with a task of --tasks"):
        script.main([*argv, "--task-steps", "pr=5"])
    with pytest.raises(ValueError, match="--seeds 'one': give comma-separated integers"):
        script.main([*argv, "--seeds", "one"])
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ValueError, match="--publish .*a-file: this is a file"):
        script.main([*argv, "--publish", str(tmp_path / "a-file")])


def test_the_published_study_is_its_reports_tabulated():
    """leaderboard/published/convexity-finetune-12l: table.md and table.csv are what the committed reports
    give (never edited by hand), and study.json names the machine of every one of them."""
    root = REPO / "leaderboard" / "published" / "convexity-finetune-12l"
    study = json.loads((root / "study.json").read_text())
    reports = [json.loads(path.read_text()) for path in sorted(root.glob("runs/*/seed-*/finetune-*.json"))]
    assert {r["task"]["name"] for r in reports} == set(study["cuts"]) == {"sid", "pr", "asr", "slu", "ks"}
    rows = build_study(study["cuts"], reports)
    assert to_markdown(rows) == (root / "table.md").read_text(encoding="utf-8")
    assert to_csv(rows) == (root / "table.csv").read_text(encoding="utf-8")
    assert set(study["report_devices"]) == {f"{r['task']['name']}/seed-{r['seeds']['train']}" for r in reports}


PUBLISHED = REPO / "leaderboard" / "published" / "convexity-finetune-12l"


def test_the_published_reports_load_and_tabulate_as_their_json():
    paths = sorted(PUBLISHED.glob("runs/*/seed-*/finetune-*.json"))
    reports = [load_report(path) for path in paths]
    assert paths and all(isinstance(r, Report) for r in reports)
    sid = load_report(PUBLISHED / "runs" / "sid" / "seed-0" / "finetune-sid.json")
    assert (sid.task, sid.main_metric, sid.higher_is_better, sid.seed, sid.steps) == ("sid", "accuracy", True, 0, 600)
    assert (sid.cut.num_layers, sid.full.num_layers) == (9, 12) and sid.cut.params < sid.full.params
    assert len(sid.cut.per_utterance.ids) == 1200 and sid.cut.per_utterance.value() == pytest.approx(99.0)
    assert sid.cut.best_step == 500 and sid.cut.history[0].step == 100 and "accuracy" in sid.cut.history[0].metrics
    assert sid.cut.train_s == pytest.approx(557.677) and sid.full.inference_s_per_audio_s > 0
    assert sid.schedule["steps"] == 600 and sid.device["type"] == "cpu" and sid.origin.endswith("finetune-sid.json")
    study = json.loads((PUBLISHED / "study.json").read_text())
    assert to_markdown(build_study(study["cuts"], reports)) == (PUBLISHED / "table.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("key", ["device", "seeds.train", "task.higher_is_better", "models.pruned.per_utterance",
                                 "models.full.training.train_s", "models.pruned.history.0.valid_accuracy"])  # fmt: skip
def test_a_report_without_a_key_names_its_file_and_the_key(tmp_path, key):
    data = json.loads((PUBLISHED / "runs" / "sid" / "seed-0" / "finetune-sid.json").read_text())
    *parents, last = key.split(".")
    section = data
    for part in parents:
        section = section[int(part)] if part.isdigit() else section[part]
    del section[last]
    path = tmp_path / "finetune-sid.json"
    path.write_text(json.dumps(data))
    shown = re.sub(r"\.(\d+)\.", r"[\1].", key)  # models.pruned.history[0].valid_accuracy
    with pytest.raises(ValueError, match=re.escape(f"{path}: key {shown!r} is missing") + ".*delete that file and run the study again"):
        load_report(path)
    with pytest.raises(ValueError, match=re.escape(f"reports[1]: key {shown!r} is missing")):
        build_study(CUTS, [report(0, [1], [1]), data])  # a report's parsed JSON goes through the loader too


def test_an_ill_typed_or_unreadable_report_names_its_file_and_what_is_wrong(tmp_path):
    data = report(0, [1, 0], [1, 1])
    data["models"]["pruned"]["params"] = "600"
    path = tmp_path / "finetune-sid.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=re.escape(f"""{path}: key 'models.pruned.params' is "600", not an integer""")):
        load_report(path)
    data["models"]["pruned"]["params"], data["models"] = 600, []
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=re.escape(f"{path}: key 'models' is [], not an object")):
        load_report(path)
    path.write_text('{"task": ')
    with pytest.raises(ValueError, match=re.escape(f"{path}: cannot be read as JSON") + ".*delete that file"):
        load_report(path)
