"""Records and published tables hold no absolute path of the machine that made them, and readers
still find the files those paths name."""

from __future__ import annotations

import json
import re
from pathlib import Path

from core.paths import portable_command, portable_path, repo_root
from core.records import load_record, write_record
from harness.evaluation.provenance import build_record
from leaderboard.aggregate import build_leaderboard
from leaderboard.convexity import convexity_candidates
from leaderboard.render import to_html

PUBLISHED = Path(__file__).resolve().parents[1] / "leaderboard" / "published"


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

    # readers find the files again: from inside the repository, and from elsewhere through the record's folder
    path = write_record(record, repo / "runs" / "records")
    found = repo / "runs" / "run" / "convexity" / "convexity.json"
    assert found in convexity_candidates(load_record(path))
    monkeypatch.chdir(tmp_path)
    assert found in convexity_candidates(load_record(path))
    (table,) = build_leaderboard([load_record(path)])
    assert [c.path for c in table.convexity] == [found]
    monkeypatch.chdir(repo)
    page = to_html([table])
    assert "runs/run/convexity/convexity.json" in page and str(tmp_path) not in page


def test_the_published_artifacts_hold_no_absolute_path():
    files = [p for p in PUBLISHED.rglob("*") if p.suffix in {".json", ".md", ".csv", ".html"}]
    assert files
    for path in files:
        text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", path.read_text(encoding="utf-8"))  # not paths
        assert not re.search(r"/(?:work|home|tmp|root|Users)/", text), path
