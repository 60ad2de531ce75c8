"""s3prl registration: S3PRLUpstream + Featurizer on our compact checkpoints, in this and in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn.utils.rnn import pad_sequence

import upstreams
from upstreams.checkpoint import save_compact
from upstreams.model import SpeechEncoder, tiny_config

ENTRY_NAMES = [
    f"pruned_{family}{suffix}" for family in ("hubert", "wavlm", "wav2vec2") for suffix in ("", "_local")
]

# The command documented for users (CKPT_DIR replaced); see upstreams/s3prl_hub.py.
ONE_LINER = (
    "import upstreams, torch; from s3prl.nn import S3PRLUpstream, Featurizer; "
    "u = S3PRLUpstream('pruned_hubert', path_or_url='CKPT_DIR').eval(); f = Featurizer(u); "
    "hs, hl = u(torch.randn(2, 32000), torch.tensor([32000, 20000])); y, yl = f(hs, hl); "
    "print(len(hs), u.downsample_rates[0], tuple(y.shape), yl.tolist())"
)
# Any connection attempt fails in the child process: the entries must work offline.
NO_NETWORK = (
    "import socket\n"
    "def _refuse(*args, **kwargs):\n"
    "    raise OSError('network disabled in this test')\n"
    "socket.socket.connect = _refuse\n"
    "socket.create_connection = _refuse\n"
)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("s3prl_ckpts")
    paths = {}
    for seed, family in enumerate(("hubert", "wavlm", "wav2vec2")):
        torch.manual_seed(seed)
        paths[family] = save_compact(SpeechEncoder(tiny_config(family)), root / family)
    return paths


def _child_env() -> dict[str, str]:
    env = dict(
        os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(Path(__file__).parents[1])
    )
    return env


def test_importing_upstreams_is_light():
    code = "import sys, json, upstreams; print(json.dumps([m in sys.modules for m in ('torch', 's3prl', 's3prl.hub')]))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=_child_env()
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [False, False, False]


def test_fresh_offline_process_runs_every_entry(checkpoints):
    """``import upstreams`` before s3prl; each entry + Featurizer; the documented one-liner itself."""
    script = NO_NETWORK + ONE_LINER.replace("CKPT_DIR", str(checkpoints["hubert"])) + "\n"
    script += (
        "import json\n"
        f"checkpoints = {json.dumps({k: str(v) for k, v in checkpoints.items()})}\n"
        "results = {}\n"
        f"for name in {ENTRY_NAMES!r}:\n"
        "    family = name.split('_')[1]\n"
        "    upstream = S3PRLUpstream(name, path_or_url=checkpoints[family]).eval()\n"
        "    featurizer = Featurizer(upstream)\n"
        "    with torch.no_grad():\n"
        "        hs, hl = upstream(torch.randn(3, 24000), torch.tensor([24000, 16000, 5000]))\n"
        "        y, yl = featurizer(hs, hl)\n"
        "    results[name] = [upstream.num_layers, upstream.downsample_rates[0], list(y.shape), yl.tolist()]\n"
        "print(json.dumps(results))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=_child_env()
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[-2] == "5 320 (2, 100, 32) [100, 63]"  # 4 layers + 1; 2 s of audio -> 100 frames
    results = json.loads(lines[-1])
    for name in ENTRY_NAMES:
        assert results[name] == [5, 320, [3, 75, 32], [75, 50, 16]], name


@pytest.fixture(scope="module")
def s3prl_nn():
    s3prl_nn = pytest.importorskip("s3prl.nn")
    upstreams.register()
    return s3prl_nn


def test_register_adds_every_entry(s3prl_nn):
    import s3prl.hub as hub

    for name in ENTRY_NAMES:
        delattr(hub, name)
    upstreams._register_with_s3prl()  # s3prl.hub already imported: registers at once
    assert all(callable(getattr(hub, name)) for name in ENTRY_NAMES)
    assert set(ENTRY_NAMES) <= set(hub.options())
    assert upstreams.register() == sorted(ENTRY_NAMES)


def test_upstream_contract_in_process(s3prl_nn, checkpoints):
    upstream = s3prl_nn.S3PRLUpstream("pruned_wavlm", path_or_url=str(checkpoints["wavlm"])).eval()
    expert = upstream.upstream
    assert expert.get_downsample_rates("hidden_states") == 320
    waves = [torch.randn(n) for n in (16000, 9000, 3000)]
    with torch.no_grad():
        batched = expert(waves)["hidden_states"]
        for index, wave in enumerate(waves):
            alone = expert([wave])["hidden_states"]
            frames = alone[0].shape[1]
            for b, a in zip(batched, alone, strict=True):
                torch.testing.assert_close(b[index, :frames], a[0], atol=1e-4, rtol=0)
        counts = {
            len(upstream(torch.randn(b, n), torch.full((b,), n))[0])
            for b, n in ((1, 800), (2, 16000), (4, 5000))
        }
    assert counts == {upstream.num_layers} == {5}


def test_every_frame_s3prl_returns_is_the_same_batched_and_alone(s3prl_nn, checkpoints):
    """s3prl keeps (samples - 1) // 320 + 1 frames per item: for a shorter item of a batch that is one
    or two frames past what the encoder makes, which must not depend on the batch."""
    for family in ("hubert", "wavlm"):
        upstream = s3prl_nn.S3PRLUpstream(f"pruned_{family}", path_or_url=str(checkpoints[family])).eval()
        sizes = (16000, 9000, 3119)  # the last has two frames fewer than s3prl keeps
        waves = [torch.randn(n) for n in sizes]
        with torch.no_grad():
            batched, batched_lens = upstream(pad_sequence(waves, batch_first=True), torch.tensor(sizes))
            for index, wave in enumerate(waves):
                alone, alone_lens = upstream(wave[None], torch.tensor([len(wave)]))
                frames = int(alone_lens[0][0])
                assert frames == (len(wave) - 1) // 320 + 1 == int(batched_lens[0][index])
                for b, a in zip(batched, alone, strict=True):
                    torch.testing.assert_close(b[index, :frames], a[0, :frames], atol=1e-4, rtol=0)


def test_entries_reject_wrong_family_and_missing_checkpoints(s3prl_nn, checkpoints, tmp_path):
    with pytest.raises(ValueError, match="use pruned_hubert"):
        s3prl_nn.S3PRLUpstream("pruned_wavlm", path_or_url=str(checkpoints["hubert"]))
    with pytest.raises(ValueError, match="needs a checkpoint"):
        s3prl_nn.S3PRLUpstream("pruned_hubert")
    with pytest.raises(FileNotFoundError, match="_local entries take a local path"):
        s3prl_nn.S3PRLUpstream("pruned_hubert_local", path_or_url=str(tmp_path / "nothing"))
