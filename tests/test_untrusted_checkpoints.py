"""Untrusted checkpoints never reach an s3prl entry that could unpickle them; only real upstream
entries are accepted as ``--upstream``."""

from __future__ import annotations

import logging

import pytest
import torch

from harness.cli import main
from upstreams.s3prl_hub import check_checkpoint, known_upstreams
from upstreams.safe_load import UnsafeCheckpointError


class _CreatesFile:
    """Unpickling this creates ``marker``: the payload a malicious checkpoint would carry."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def evil(tmp_path):
    """A distiller-style checkpoint whose unpickling would create ``tmp_path / "code_ran"``."""
    marker = tmp_path / "code_ran"
    path = tmp_path / "EVIL.ckpt"
    torch.save({"Config": _CreatesFile(str(marker)), "Distiller": {}, "Transformer": {}}, path)
    return path, marker


def _evaluate(*args: str) -> list[str]:
    return ["evaluate", "--tasks", "asr", "--corpus", "does-not-matter", *args]


@pytest.mark.parametrize("entry", ["distiller_local", "mockingjay_local", "hubert_local"])
def test_an_unsafe_ckpt_is_refused_before_any_s3prl_entry_sees_it(entry, evil, caplog):
    path, marker = evil
    with caplog.at_level(logging.ERROR):
        assert main(_evaluate("--upstream", entry, "--ckpt", str(path))) == 2
    assert not marker.exists()
    message = caplog.records[-1].getMessage()
    assert str(path) in message and "weights_only=True" in message and "--trust-checkpoint" in message


def test_a_directory_holding_an_unsafe_file_is_refused(evil, caplog):
    path, marker = evil
    with caplog.at_level(logging.ERROR):
        assert main(_evaluate("--upstream", "distiller_local", "--ckpt", str(path.parent))) == 2
    assert not marker.exists() and "--trust-checkpoint" in caplog.records[-1].getMessage()


def test_the_engine_refuses_too(evil):
    from harness.evaluation.config import EvaluateConfig
    from harness.evaluation.engine import evaluate

    path, marker = evil
    config = EvaluateConfig(upstream="distiller_local", tasks=["asr"], corpus=path.parent, ckpt=str(path))
    with pytest.raises(UnsafeCheckpointError, match="--trust-checkpoint"):
        evaluate(config)
    assert not marker.exists()


def test_safe_files_pass_and_trust_skips_the_check(evil, tmp_path):
    path, marker = evil
    torch.save({"model": {"w": torch.zeros(2)}, "cfg": {"layers": 2}}, tmp_path / "plain.pt")
    check_checkpoint("hubert_local", str(tmp_path / "plain.pt"))
    check_checkpoint("distiller_local", str(path), trust=True)  # the user's explicit opt-in
    with pytest.raises(UnsafeCheckpointError, match="refusing to load"):  # our entries never unpickle
        check_checkpoint("pruned_hubert", str(path), trust=True)
    assert not marker.exists()


def test_a_ckpt_that_cannot_be_checked_first_needs_the_opt_in(tmp_path, caplog):
    (tmp_path / "model.bin").write_bytes(b"not a checkpoint format torch or safetensors knows")
    with caplog.at_level(logging.ERROR):
        assert main(_evaluate("--upstream", "hubert_local", "--ckpt", str(tmp_path / "model.bin"))) == 2
    assert "could not be checked" in caplog.records[-1].getMessage() and "--trust-checkpoint" in caplog.records[-1].getMessage()
    with caplog.at_level(logging.ERROR):
        assert main(_evaluate("--upstream", "hubert_url", "--ckpt", "https://example.com/model.pt")) == 2
    assert "cannot be checked" in caplog.records[-1].getMessage()
    with caplog.at_level(logging.ERROR):
        assert main(_evaluate("--upstream", "hubert_local", "--ckpt", "typo/model")) == 2
    assert "--ckpt typo/model: no such file or directory (hubert_local takes a local path)" in caplog.records[-1].getMessage()


@pytest.mark.parametrize("name", ["Path", "FileLock", "load_and_convert_fairseq_ckpt"])
def test_only_real_upstream_entries_are_accepted(name, caplog):
    assert name not in known_upstreams()
    with caplog.at_level(logging.ERROR):
        assert main(_evaluate("--upstream", name)) == 2
    assert f"unknown upstream {name!r}" in caplog.records[-1].getMessage()


def test_real_entries_stay_known():
    known = known_upstreams()
    assert {"fbank", "hubert", "hubert_local", "distiller_local", "pruned_hubert", "pruned_wavlm_local"} <= set(known)
