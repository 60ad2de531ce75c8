"""``--finetune TASK``: the pruned model and the full teacher fine-tuned end to end, then compared."""

from __future__ import annotations

import json

import pytest
import torch

from core.registry import UnknownNameError
from harness import finetune, finetune_model
from harness.cli import main as harness_main
from harness.finetune import FinetuneConfig, finetune_pair
from tasks.corpora.manifest import ManifestError
from upstreams import tiny_config
from upstreams.checkpoint import load_compact, save_compact
from upstreams.model import SpeechEncoder

FAST = FinetuneConfig(steps=30, batch_size=8, encoder_lr=1e-3, head_lr=1e-2, eval_every=10, warmup=0.0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A random 4-layer teacher and its first two layers, as compact checkpoints."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    teacher = SpeechEncoder(tiny_config("hubert")).eval()
    return save_compact(teacher, root / "teacher"), save_compact(teacher.truncate(2), root / "pruned")


def test_finetune_compares_pruned_with_full(synth_corpus, models, tmp_path, monkeypatch):
    teacher, pruned = models
    weights_before = (pruned / "model.safetensors").read_bytes()
    path = finetune_pair(pruned, str(teacher), "sid", corpus=synth_corpus, out=tmp_path, device="cpu", schedule=FAST)
    assert path == tmp_path / "finetune-sid.json"
    report = json.loads(path.read_text())
    small, full = report["models"]["pruned"], report["models"]["full"]
    assert (small["num_layers"], full["num_layers"]) == (2, 4) and small["params"] < full["params"]
    assert report["schedule"]["head_lr"] == 1e-2 and report["schedule"]["steps"] == 30 and report["seeds"] == {"train": 0}
    for model in (small, full):
        assert model["training"]["train_s"] > 0 and model["training"]["train_s_per_step"] > 0
        assert model["inference"]["inference_s_per_audio_s"] > 0 and model["inference"]["test_audio_s"] > 0
        assert 0 <= model["test"]["accuracy"] <= 100 and model["best_step"] in (10, 20, 30)
        losses = [h["train_loss"] for h in model["history"]]
        assert len(losses) == 3 and losses[-1] < losses[0]  # it learns
    assert report["comparison"]["params_ratio"] < 1 and report["comparison"]["inference_time_ratio"] > 0

    # the fine-tuned pruned encoder is saved beside, the convexity checkpoint is left as it was
    tuned = load_compact(tmp_path / "finetuned-sid")
    assert tuned.config.num_layers == 2 and (tmp_path / "finetuned-sid" / "head.safetensors").is_file()
    assert not torch.equal(tuned.state_dict()["transformer.layers.0.feed_forward.intermediate_dense.weight"],
                           load_compact(pruned).state_dict()["transformer.layers.0.feed_forward.intermediate_dense.weight"])  # fmt: skip
    assert (pruned / "model.safetensors").read_bytes() == weights_before

    # a rerun finds the report and trains nothing; a report of another schedule or seed is refused
    monkeypatch.setattr(finetune, "finetune_models", lambda *a, **k: pytest.fail("retrained"))
    assert finetune_pair(pruned, str(teacher), "sid", corpus=synth_corpus, out=tmp_path, schedule=FAST) == path
    with pytest.raises(ValueError, match="was made with another schedule"):
        finetune_pair(pruned, str(teacher), "sid", corpus=synth_corpus, out=tmp_path, schedule=FAST, steps=31)
    with pytest.raises(ValueError, match="was made with another seed "):
        finetune_pair(pruned, str(teacher), "sid", corpus=synth_corpus, out=tmp_path, schedule=FAST, seed=1)


def test_alternating_steps_learn_what_each_learns_alone(synth_corpus, tmp_path):
    """The pair trains a step of each in turn (so that their times see one load); each keeps its own
    random state (dropout) and batches, so the pruned model ends as it would trained by itself."""
    torch.manual_seed(0)
    full = SpeechEncoder(tiny_config("hubert", dropout=0.1, attention_dropout=0.1)).eval()
    teacher, pruned = save_compact(full, tmp_path / "teacher"), save_compact(full.truncate(2), tmp_path / "pruned")
    task = finetune.check_task_data("sid", synth_corpus, "demo")
    config = finetune.resolve_schedule("demo", task.preset("demo"), schedule=FinetuneConfig(
        steps=6, batch_size=4, encoder_lr=1e-3, head_lr=1e-2, eval_every=3, warmup=0.0))  # fmt: skip
    data = {split: finetune_model.read_split(task, synth_corpus, split) for split in ("train", "valid", "test")}
    task.fit_labels(data["train"].references)
    data["train"].targets = [task.encode(ref) for ref in data["train"].references]
    runtime = finetune.training.setup_runtime("cpu")

    def run(path, label):
        return finetune.FinetuneRun(label, load_compact(path), task, task.preset("demo").head, config, data, 0, runtime)

    alone = run(pruned, "pruned")
    (report_alone,) = finetune.finetune_models([alone], config)
    pair = [run(pruned, "pruned"), run(teacher, "full")]
    report_pruned, report_full = finetune.finetune_models(pair, config)
    for name, weight in alone.model.state_dict().items():
        assert torch.equal(weight, pair[0].model.state_dict()[name]), name
    assert report_pruned["history"] == report_alone["history"] and report_pruned["test"] == report_alone["test"]
    assert len(pair[0].step_s) == len(pair[1].step_s) == 6 and report_full["num_layers"] == 4


def test_a_killed_pair_resumes_as_if_never_stopped(synth_corpus, tmp_path, monkeypatch):
    """The pair's state is saved at each validation; a run killed between two goes on from the last one
    with the same batches, crops, dropout and weights, so its report is the uninterrupted one's."""
    torch.manual_seed(0)
    full = SpeechEncoder(tiny_config("hubert", dropout=0.1, attention_dropout=0.1)).eval()
    teacher, pruned = save_compact(full, tmp_path / "teacher"), save_compact(full.truncate(2), tmp_path / "pruned")
    config = FinetuneConfig(steps=8, batch_size=16, encoder_lr=1e-3, head_lr=1e-2, eval_every=3, warmup=0.0, max_train_seconds=1.0)
    train_size = len(finetune_model.read_split(finetune.check_task_data("sid", synth_corpus, "demo"), synth_corpus, "train").paths)
    assert config.steps * config.batch_size > train_size  # the run crosses an epoch, whose batches the state must carry

    def run(out, state_dir=None):
        path = finetune_pair(pruned, str(teacher), "sid", corpus=synth_corpus, out=out, device="cpu", schedule=config,
                             save_finetuned=False, state_dir=state_dir)  # fmt: skip
        return json.loads(path.read_text())

    whole = run(tmp_path / "whole")
    assert not (tmp_path / "whole" / "finetune-sid.state.pt").exists()  # removed once the pair is tested

    real_step, calls = finetune.FinetuneRun.train_step, []

    # a state_dir that cannot be a directory is refused before any training
    (tmp_path / "a-file").write_text("x")
    monkeypatch.setattr(finetune.FinetuneRun, "train_step", lambda self: pytest.fail("trained before checking state_dir"))
    with pytest.raises(ValueError, match="state_dir .*a-file: cannot create the directory"):
        run(tmp_path / "other", state_dir=tmp_path / "a-file")

    def killed_at_step_5(self):
        calls.append(self.label)
        if len(calls) > 8:  # two runs a step: the 9th call is step 5
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(finetune.FinetuneRun, "train_step", killed_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed", state_dir=tmp_path / "state")
    state = tmp_path / "state" / "finetune-sid.state.pt"
    assert state.is_file() and not (tmp_path / "killed" / "finetune-sid.json").exists()

    # another seed (or schedule) finds the state of another run and says so
    with pytest.raises(ValueError, match="state of another fine-tuning run .*seed"):
        finetune_pair(pruned, str(teacher), "sid", corpus=synth_corpus, out=tmp_path / "killed", device="cpu",
                      schedule=config, seed=1, save_finetuned=False, state_dir=tmp_path / "state")  # fmt: skip

    monkeypatch.setattr(finetune.FinetuneRun, "train_step", real_step)
    resumed = run(tmp_path / "killed", state_dir=tmp_path / "state")
    assert not state.exists()
    for name in ("pruned", "full"):
        again, once = resumed["models"][name], whole["models"][name]
        assert again["training"]["resumed_at"] == [3] and once["training"]["resumed_at"] == []
        for key in ("history", "best_step", "valid", "test", "per_utterance"):
            assert again[key] == once[key], (name, key)


def test_unknown_task_and_missing_manifests(synth_corpus, tmp_path):
    with pytest.raises(UnknownNameError, match="Known tasks: asr, ks, pr, sid, slu"):
        finetune.check_task_data("spk", synth_corpus, "demo")
    corpus = tmp_path / "asr-only"
    for split in ("train", "valid", "test"):
        (corpus / "manifests" / "asr").mkdir(parents=True, exist_ok=True)
        (corpus / "manifests" / "asr" / f"{split}.csv").touch()
    with pytest.raises(ManifestError, match=r"'sid' needs manifests/sid/.*has tasks: asr"):
        finetune.check_task_data("sid", corpus, "demo")
    with pytest.raises(ValueError, match="fine-tuning preset"):
        finetune.check_task_data("sid", synth_corpus, "huge")


def test_cli_finetune_option(synth_corpus, models, tmp_path):
    teacher, _ = models
    common = ["compress", "--teacher", str(teacher), "--corpus", str(synth_corpus), "--cache", str(tmp_path / "cache")]
    code = harness_main([*common, "--method", "convexity", "--labels", "speaker", "--max-points", "40",
                         "--finetune", "pr", "--finetune-steps", "2", "--out", str(tmp_path / "c")])  # fmt: skip
    assert code == 0
    report = json.loads((tmp_path / "c" / "finetune-pr.json").read_text())
    assert report["schedule"]["steps"] == 2 and set(report["models"]) == {"pruned", "full"}
    assert "per" in report["models"]["pruned"]["test"]
    # bad names fail before any work; --finetune belongs to convexity
    assert harness_main([*common, "--method", "convexity", "--finetune", "sdi", "--out", str(tmp_path / "d")]) == 2
    assert not (tmp_path / "d").exists()
    assert harness_main([*common, "--method", "dphubert", "--finetune", "sid", "--out", str(tmp_path / "e")]) == 2
