"""``harness evaluate`` under torchrun: 2 gloo processes on the CPU give the single process's result."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from harness.evaluation.entries import FeatureSet
from upstreams.checkpoint import save_compact
from upstreams.model import SpeechEncoder, tiny_config


def _evaluate(command_prefix, ckpt, corpus, out, env):
    command = [*command_prefix, "-m", "harness.cli", "evaluate", "--upstream", "pruned_hubert", "--ckpt", str(ckpt),
               "--tasks", "asr,sid", "--corpus", str(corpus), "--max-steps", "40", "--cache", str(out / "cache"),
               "--records", str(out / "records")]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return {json.loads(p.read_text())["task"]["name"]: json.loads(p.read_text()) for p in (out / "records").glob("*.json")}


@pytest.mark.skipif(sys.platform == "win32", reason="gloo on Linux/macOS")
def test_two_gloo_processes_match_one(synth_corpus, tmp_path):
    torch.manual_seed(0)
    model = SpeechEncoder(tiny_config("hubert")).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    ckpt = save_compact(model, tmp_path / "tiny")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    one = _evaluate([sys.executable], ckpt, synth_corpus, tmp_path / "one", env)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    two = _evaluate([*torchrun], ckpt, synth_corpus, tmp_path / "two", env)
    assert sorted(two) == ["asr", "sid"] and len(list((tmp_path / "two" / "records").glob("*.json"))) == 2  # rank 0 only
    for task in ("asr", "sid"):
        assert two[task]["corpus"]["utterances"] == one[task]["corpus"]["utterances"]
        np.testing.assert_allclose(two[task]["layer_weights"], one[task]["layer_weights"], atol=2e-3)
        assert abs(two[task]["main_score"]["value"] - one[task]["main_score"]["value"]) <= 2.0, task
        first = [h["train_loss"] for h in one[task]["history"][next(iter(one[task]["history"]))]]
        second = [h["train_loss"] for h in two[task]["history"][next(iter(two[task]["history"]))]]
        np.testing.assert_allclose(second, first, rtol=2e-2)  # the same batches, the same losses
    # the extraction was shared: each rank wrote half the utterances, rank 0 joined them
    joined = [FeatureSet(m.parent) for m in (tmp_path / "two" / "cache").rglob("meta.json")
              if json.loads(m.read_text()).get("parts") == 2 and json.loads(m.read_text())["kind"] == "frames"]  # fmt: skip
    alone = [FeatureSet(m.parent) for m in (tmp_path / "one" / "cache").rglob("meta.json")
             if json.loads(m.read_text())["kind"] == "frames"]  # fmt: skip
    assert len(joined) == len(alone) == 3  # train, valid, test
    for entry in joined:
        (reference,) = [other for other in alone if set(other.keys) == set(entry.keys)]
        for key in entry.keys[:5]:
            np.testing.assert_allclose(entry.get(entry.rows([key])[0]).astype(np.float32),
                                       reference.get(reference.rows([key])[0]).astype(np.float32), atol=2e-2)  # fmt: skip
