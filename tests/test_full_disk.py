"""A full disk is one line naming the file and what to do (exit code 2), and a result computed
before the failure is saved elsewhere, its place said. The full disk is a patched write raising
``OSError(ENOSPC)`` (or a library's own words for it), so nothing needs mounting."""

from __future__ import annotations

import errno
import json
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest

from core.files import WriteError, atomic_path, write_json
from core.records import load_record, write_record
from harness.cli import main
from upstreams.checkpoint import load_compact, save_compact
from upstreams.model import SpeechEncoder, tiny_config

FULL = OSError(errno.ENOSPC, "No space left on device")


def _error(caplog) -> str:
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    return errors[0]


@pytest.fixture(autouse=True)
def rescue_here(tmp_path, monkeypatch):
    """Results saved elsewhere go under this test's directory (the system temporary directory's stand-in)."""
    import tempfile

    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))


def _saved_to(message: str) -> Path:
    return Path(message.split("was saved to ")[1].split(" instead")[0])


def test_a_record_that_cannot_be_written_is_saved_elsewhere(tmp_path, monkeypatch):
    import core.files
    from core.records import Record, TaskInfo

    real = core.files.json.dump

    def dump(obj, f, **kwargs):
        if str(tmp_path / "records") in f.name:
            raise FULL
        return real(obj, f, **kwargs)

    monkeypatch.setattr(core.files.json, "dump", dump)
    record = Record.create(task=TaskInfo("sid", ("accuracy",), "accuracy", True), metrics={"test": {"accuracy": 50.0}},
                           upstream={"name": "fbank"}, corpus={"name": "synthspeech"}, config={}, sections={})  # fmt: skip
    with pytest.raises(WriteError) as failure:
        write_record(record, tmp_path / "records")
    message = str(failure.value)
    assert f"cannot write {tmp_path / 'records'}" in message and "no space left on the device" in message
    saved = _saved_to(message)
    assert saved.is_relative_to(tmp_path / "tmp") and load_record(saved).to_dict() == record.to_dict() and f"move it to {tmp_path / 'records'}" in message


def test_a_checkpoint_that_cannot_be_written_is_saved_elsewhere(tmp_path, monkeypatch):
    import safetensors.torch

    real = safetensors.torch.save_file

    def save_file(state, filename, metadata=None):
        if "harness-rescue" not in filename:  # safetensors reports a full disk in its own words
            raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real(state, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    model = SpeechEncoder(tiny_config("hubert"))
    with pytest.raises(WriteError, match=f"cannot write {tmp_path / 'ckpt' / 'model.safetensors'}: no space") as failure:
        save_compact(model, tmp_path / "ckpt")
    assert load_compact(_saved_to(str(failure.value))).config == model.config


def test_compress_out_on_a_full_disk_is_one_line(synth_corpus, tmp_path, monkeypatch, caplog):
    import safetensors.torch

    import harness.compression.convexity.method as convexity

    def compress(teacher, out, **options):  # the method's work done, its checkpoint is written
        return save_compact(SpeechEncoder(tiny_config("hubert")), out)

    real = safetensors.torch.save_file

    def save_file(state, filename, metadata=None):
        if "harness-rescue" not in filename:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(state, filename, metadata=metadata)

    monkeypatch.setattr(convexity, "compress_convexity", compress)
    monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    with caplog.at_level(logging.ERROR):
        assert main(["compress", "--method", "convexity", "--corpus", str(synth_corpus), "--out", str(tmp_path / "out")]) == 2
    message = _error(caplog)
    assert f"cannot write {tmp_path / 'out' / 'model.safetensors'}: no space left on the device" in message
    assert load_compact(_saved_to(message)).num_params() > 0 and f"move it to {tmp_path / 'out'}" in message


def test_a_full_feature_cache_is_one_line_naming_the_cache(synth_corpus, tmp_path, monkeypatch, caplog):
    import harness.evaluation.entries
    import harness.evaluation.extraction

    def full(*args, **kwargs):
        raise FULL

    for kind in harness.evaluation.entries.ENTRY_KINDS:  # SID reads pooled statistics, made as frames are
        monkeypatch.setitem(harness.evaluation.extraction.WRITERS, kind, full)
    command = ["evaluate", "--upstream", "fbank", "--tasks", "sid", "--corpus", str(synth_corpus), "--max-steps", "1",
               "--cache", str(tmp_path / "cache"), "--records", str(tmp_path / "records")]  # fmt: skip
    with caplog.at_level(logging.ERROR):
        assert main(command) == 2
    message = _error(caplog)
    assert f"cannot write {tmp_path / 'cache' / 'features'}" in message and "give another --cache" in message
    assert not list((tmp_path / "cache").rglob(".tmp-*"))  # no partial entry left behind


def test_a_full_disk_anywhere_is_one_line(tmp_path, monkeypatch, caplog):
    """An output the harness writes without naming it (a log line, a progress file) still gives one line."""

    def synthesize(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "progress.jsonl"))

    monkeypatch.setattr("tasks.corpora.synth.synthesize_corpus", synthesize)
    with caplog.at_level(logging.ERROR):
        assert main(["corpus", "synth", "--out", str(tmp_path / "c")]) == 2
    assert f"cannot write {tmp_path / 'progress.jsonl'}: no space left on the device" in _error(caplog)


def test_writers_that_only_say_system_error_count_on_a_full_disk(tmp_path, monkeypatch):
    import soundfile as sf

    import core.files

    monkeypatch.setattr(core.files, "_no_space_at", lambda path: True)  # what libsndfile leaves to find out
    target = tmp_path / "wavs" / "a.wav"
    with pytest.raises(WriteError, match=f"cannot write {target}: no space left on the device"):
        with atomic_path(target):
            raise sf.LibsndfileError(2, "Error opening: ")  # "System error."
    assert not list(target.parent.iterdir())


def test_a_synthesis_child_that_cannot_write_names_the_wav_and_the_disk(tmp_path, monkeypatch):
    from tasks.corpora import synth_audio
    from tasks.corpora.synth import plan_jobs
    from tasks.corpora.synth_sizes import PRESETS

    def write(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    # the forked child inherits the patches: no eSpeak in this process, and a disk that is full
    monkeypatch.setattr(synth_audio, "_prepare_worker", lambda: None)
    monkeypatch.setattr(synth_audio, "render", lambda job: (np.zeros(1600, np.float32), [], []))
    monkeypatch.setattr(synth_audio.sf, "write", write)
    job = plan_jobs(PRESETS["micro"], seed=0)[0]
    with pytest.raises(WriteError) as failure:
        synth_audio.synthesize_in_fork((job, str(tmp_path)))
    message = str(failure.value)
    assert f"cannot write {tmp_path / 'wavs' / job.speaker.id / (job.id + '.wav')}" in message
    assert "no space left on the device" in message
    # the synthesis pool hands a worker's error to the parent pickled: it stays the same sentence
    again = pickle.loads(pickle.dumps(failure.value))
    assert isinstance(again, WriteError) and str(again) == message and again.errno == errno.ENOSPC


def test_model_safetensors_gets_the_same_permissions_as_every_other_file(tmp_path):
    import os

    save_compact(SpeechEncoder(tiny_config("hubert")), tmp_path / "ckpt")
    write_json(tmp_path / "other.json", {})
    umask = os.umask(0)
    os.umask(umask)
    files = [*(tmp_path / "ckpt").iterdir(), tmp_path / "other.json"]
    modes = {p.name: p.stat().st_mode & 0o777 for p in files}
    assert modes == dict.fromkeys(["model.safetensors", "config.json", "other.json"], 0o666 & ~umask)
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["format"] == "compact-speech-encoder"
