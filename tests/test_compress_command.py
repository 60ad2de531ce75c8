"""``harness compress``: every method listed and documented, shared options reach each method that takes them."""

from __future__ import annotations

import pytest

from core.paths import CACHE_DIR
from harness.cli import main as harness_main
from harness.compression.registry import METHODS


def _help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as done:
        harness_main(["compress", *argv, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def test_help_lists_every_method_and_each_methods_help_documents_its_options(capsys):
    everything = _help(capsys)
    for name in ("convexity", "dphubert", "distill", "convexity_dphubert"):
        assert f"{name}: {METHODS.get(name).help}" in everything
        assert f"options of --method {name}" in everything
    distill = _help(capsys, "--method", "distill")
    for text in ("--loss", "default prediction", "DistilHuBERT's 2-layer student", "within 1 % under", "--stage1-steps"):
        assert text in " ".join(distill.split()), text
    assert "--reg-lr" not in distill and "--labels" not in distill
    hybrid = " ".join(_help(capsys, "--method", "convexity_dphubert").split())
    for text in ("--labels", "--rule", "--max-points", "--reg-lr", "WHOLE teacher", "under_budget", "default: all"):
        assert text in hybrid, text
    assert "--loss" not in hybrid and "--depths" not in hybrid


def test_shared_options_reach_every_method_that_takes_them(tmp_path, monkeypatch, caplog):
    calls = []
    real_get = METHODS.get

    class FakeMethod:  # the registry entry, with its compress function replaced
        def __init__(self, method):
            self.method = method

        def __getattr__(self, name):
            return getattr(self.method, name)

        @staticmethod
        def compress(teacher, out, **kwargs):
            calls.append({k: v for k, v in kwargs.items() if k not in ("corpus", "preset", "device")})
            return out

    monkeypatch.setattr(METHODS, "get", lambda name: FakeMethod(real_get(name)))
    (tmp_path / "corpus.json").write_text("{}")
    common = ["--corpus", str(tmp_path), "--out", str(tmp_path / "out")]
    assert harness_main(["compress", "--method", "distill", "--loss", "layer2layer", "--sparsity", "0.5",
                         "--stage1-steps", "3", "--distill-layers", "0,2", *common]) == 0  # fmt: skip
    assert calls.pop() == {"seed": 0, "loss": "layer2layer", "sparsity": 0.5, "stage1_steps": 3, "distill_layers": [0, 2]}
    assert harness_main(["compress", "--method", "convexity_dphubert", "--labels", "word", "--rule", "plateau",
                         "--sparsity", "0.6", "--reg-lr", "0.1", *common]) == 0  # fmt: skip
    assert calls.pop() == {"seed": 0, "labels": "word", "rule": "plateau", "sparsity": 0.6, "reg_lr": 0.1,
                           "scores_cache": CACHE_DIR / "convexity"}  # the teacher's scores, kept for the next compression
    with caplog.at_level("ERROR"):
        assert harness_main(["compress", "--method", "distill", "--reg-lr", "0.1", *common]) == 2
        assert harness_main(["compress", "--method", "convexity_dphubert", "--loss", "prediction", *common]) == 2
        assert harness_main(["compress", "--method", "dphubert", "--loss", "prediction", *common]) == 2
    assert "--method distill does not take --reg-lr" in caplog.text
    assert "--method convexity_dphubert does not take --loss" in caplog.text and not calls
