"""Data checks: corrupt samples refused at prepare time, and hand-edited manifests refused with their
file and line, their fingerprint the one of what is read."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from harness.cli import main
from tasks.corpora.manifest import CorpusInfo, ManifestError, corpus_fingerprint, manifest_path, read_manifest


def _error(caplog) -> str:
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    return errors[0]


# ---------------------------------------------------------------- samples
def _speech_commands(root):
    """A Speech Commands tree of tones (3 words x 3 speakers), written as 32-bit float WAVs."""
    rng = np.random.default_rng(0)
    for w, word in enumerate(["yes", "no", "up"]):
        for speaker in ["0a7c2a8d", "1b4c9e2f", "c3d5e6f7"]:
            tone = 0.3 * np.sin(2 * np.pi * (200 + 50 * w) * np.arange(16000) / 16000) + 0.01 * rng.standard_normal(16000)
            (root / word).mkdir(parents=True, exist_ok=True)
            sf.write(root / word / f"{speaker}_nohash_0.wav", tone.astype(np.float32), 16000, subtype="FLOAT")
    (root / "validation_list.txt").write_text("yes/1b4c9e2f_nohash_0.wav\n")
    (root / "testing_list.txt").write_text("no/c3d5e6f7_nohash_0.wav\n")
    return root


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_infinite_samples_are_refused_at_prepare(bad, tmp_path, caplog):
    root = _speech_commands(tmp_path / "sc")
    broken = root / "up" / "0a7c2a8d_nohash_0.wav"
    samples, rate = sf.read(broken, dtype="float32")
    samples[8000] = bad
    sf.write(broken, samples, rate, subtype="FLOAT")
    args = ["corpus", "prepare", "speech_commands", "--root", str(root), "--out", str(tmp_path / "out")]
    with caplog.at_level(logging.ERROR):
        assert main(args) == 2
    assert f"{broken}: contains NaN or infinite samples" in _error(caplog) and "--skip-bad" in _error(caplog)
    assert main([*args, "--skip-bad"]) == 0
    info = CorpusInfo.read(tmp_path / "out")
    assert [s["path"] for s in info.params["skipped"]] == [str(broken)]


# ---------------------------------------------------------------- hand-edited manifests
@pytest.fixture
def corpus(synth_corpus, tmp_path):
    """A copy of the micro corpus (manifests and corpus.json; the wavs linked) to edit by hand."""
    copy = tmp_path / "corpus"
    shutil.copytree(synth_corpus, copy, ignore=shutil.ignore_patterns("wavs"))
    (copy / "wavs").symlink_to(synth_corpus / "wavs")
    return copy


def _edit(corpus, row: int, column: str, value) -> None:
    path = manifest_path(corpus, "sid", "train")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.loc[row, column] = value
    frame.to_csv(path, index=False)


def _evaluate(corpus, tmp_path) -> list[str]:
    return ["evaluate", "--upstream", "fbank", "--tasks", "sid", "--corpus", str(corpus), "--max-steps", "1",
            "--cache", str(tmp_path / "cache"), "--records", str(tmp_path / "records")]  # fmt: skip


def test_a_missing_wav_names_the_manifest_and_the_row(corpus, tmp_path, caplog):
    _edit(corpus, 3, "wav_path", "wavs/spk000/gone.wav")
    path = manifest_path(corpus, "sid", "train")
    with pytest.raises(ManifestError, match=f"{path} line 5 .*gone.wav does not exist"):
        read_manifest(corpus, "sid", "train")
    with caplog.at_level(logging.ERROR):
        assert main(_evaluate(corpus, tmp_path)) == 2
    message = _error(caplog)
    assert f"{path} line 5" in message and "gone.wav does not exist" in message


@pytest.mark.parametrize("value", ["abc", "-1", "0", ""])
def test_a_bad_duration_names_the_manifest_and_the_row(value, corpus, tmp_path, caplog):
    _edit(corpus, 0, "duration", value)
    with caplog.at_level(logging.ERROR):
        assert main(_evaluate(corpus, tmp_path)) == 2
    message = _error(caplog)
    assert f"{manifest_path(corpus, 'sid', 'train')} line 2" in message and f"duration {value!r}" in message


def test_duplicate_ids_are_refused(corpus):
    first = read_manifest(corpus, "sid", "train")["id"].iloc[0]
    _edit(corpus, 4, "id", first)
    with pytest.raises(ManifestError, match=f"id '{first}' is on lines 2, 6; ids must be unique"):
        read_manifest(corpus, "sid", "train")


def test_the_fingerprint_is_of_the_manifests_as_read(corpus, tmp_path, caplog):
    stored = CorpusInfo.read(corpus).fingerprint
    path = manifest_path(corpus, "sid", "train")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    frame.iloc[:-1].to_csv(path, index=False)  # a row removed by hand
    with caplog.at_level(logging.WARNING):
        info = CorpusInfo.read(corpus)
    assert info.fingerprint == corpus_fingerprint(corpus) != stored
    assert "the manifests changed since the corpus was prepared" in caplog.text
    assert main(_evaluate(corpus, tmp_path)) == 0
    from core.records import load_records

    (record,) = load_records(tmp_path / "records")
    assert record.corpus["fingerprint"] == info.fingerprint and record.corpus["utterances"]["train"] == len(frame) - 1
