"""Records hold no absolute path of the machine that made them."""

from __future__ import annotations

import json
from pathlib import Path

from core.paths import portable_command, portable_path, repo_root
from harness.provenance import build_record


def test_paths_inside_the_root_become_relative_and_others_stay_as_given(tmp_path):
    root = tmp_path / "repo"
    assert portable_path(root / "runs" / "x", root) == "runs/x"
    assert portable_path(str(root), root) == "."
    assert portable_path("/opt/models/teacher", root) == "/opt/models/teacher"
    assert portable_path("facebook/hubert-base-ls960", root) == "facebook/hubert-base-ls960"
    command = f"harness run --out {root}/runs/a --corpus=librispeech:{root}/data/ls --records /opt/r --teacher torchaudio:X"
    assert portable_command(command, root) == "harness run --out runs/a --corpus=librispeech:data/ls --records /opt/r --teacher torchaudio:X"
    assert portable_command("harness run --out runs/a", root) == "harness run --out runs/a"


def test_the_repository_root_is_the_nearest_folder_with_git(tmp_path):
    (tmp_path / "repo" / ".git").mkdir(parents=True)
    (tmp_path / "repo" / "a" / "b").mkdir(parents=True)
    assert repo_root(tmp_path / "repo" / "a" / "b") == tmp_path / "repo"
    assert repo_root(tmp_path / "nowhere") == tmp_path / "nowhere"


def _record_in(repo: Path):
    run = repo / "runs" / "run" / "convexity"
    return build_record(
        task={"name": "sid", "metrics": ["accuracy"], "main_metric": "accuracy", "higher_is_better": True},
        metrics={"test": {"accuracy": 50.0}},
        upstream={"name": "pruned_hubert", "ckpt": str(run), "ckpt_sha256": "ab" * 32, "params": 10,
                  "cost_source": str(run / "cost.json"),
                  "checkpoint_metadata": {"compression": {"teacher": str(repo / "upstreams" / "teachers" / "t")}},
                  "compression": {"method": "convexity", "teacher": str(repo / "upstreams" / "teachers" / "t"),
                                  "sparsity": 0.5, "dir": str(run)}},
        corpus={"name": "synthspeech", "root": str(repo / "data" / "synth-tiny"), "fingerprint": "f00d"},
        config={"preset": "demo", "cache": str(repo / "data" / "cache")}, seeds={"train": 0}, timing={},
        device={"type": "cpu"},
        extra={"command": f"harness evaluate --ckpt {run} --corpus {repo}/data/synth-tiny --cache /opt/cache"},
    )  # fmt: skip


def test_a_record_built_in_a_repository_holds_no_absolute_path_under_it(tmp_path, monkeypatch):
    repo = tmp_path / "clone"
    (repo / ".git").mkdir(parents=True)
    (repo / "runs" / "run" / "convexity").mkdir(parents=True)
    (repo / "runs" / "run" / "convexity" / "convexity.json").write_text('{"word": [1, 2, 3], "kept_layers": 2}')
    (repo / "sub").mkdir()
    monkeypatch.chdir(repo / "sub")  # anywhere in the repository: paths are relative to its root
    record = _record_in(repo)
    text = json.dumps(record.to_dict())
    assert str(tmp_path) not in text
    assert record.upstream["compression"]["dir"] == "runs/run/convexity" and record.corpus["root"] == "data/synth-tiny"
    assert record.upstream["checkpoint_metadata"]["compression"]["teacher"] == "upstreams/teachers/t"
    assert record.command == "harness evaluate --ckpt runs/run/convexity --corpus data/synth-tiny --cache /opt/cache"
