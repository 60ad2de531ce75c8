"""KS (SUPERB keyword spotting) on SynthSpeech's words and on a tiny Speech Commands tree in its layout."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import soundfile as sf
from test_corpora_real import (  # tests/test_corpora_real.py
    VOICES,
    build_librispeech,
    build_speech_commands,
    speak,
)

from harness.cli import main
from tasks.corpora import PREPARERS
from tasks.corpora.manifest import CorpusInfo, read_manifest
from tasks.registry import get_task

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _evaluate(corpus, tmp_path):
    return main(["evaluate", "--upstream", "fbank", "--tasks", "ks", "--corpus", str(corpus), "--max-steps", "2",
                 "--cache", str(tmp_path / "cache"), "--records", str(tmp_path / "records")])  # fmt: skip


def _record(tmp_path):
    (path,) = (tmp_path / "records").glob("*.json")
    return json.loads(path.read_text())


def test_ks_labels_are_the_ten_keywords_unknown_and_silence():
    ks = get_task("ks")
    assert [ks.parse_label(w) for w in ("yes", "cat", "_silence_", "seven")] == [("yes",), ("_unknown_",), ("_silence_",), ("_unknown_",)]


def test_ks_on_synthspeech_words_has_no_silence_class_and_says_so(synth_corpus, tmp_path):
    assert _evaluate(synth_corpus, tmp_path) == 0
    record = _record(tmp_path)
    classes = record["config"]["labels"]["classes"]["keyword"]
    assert "_unknown_" in classes and "_silence_" not in classes
    assert set(classes) - {"_unknown_"} <= {"yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"}
    assert record["config"]["labels"]["silence"] == "none: the corpus has no background noise"
    assert record["timing"]["feature_kind_by_split"]["train"] == "pooled"


def test_ks_on_speech_commands_crops_background_noise_for_silence(tmp_path):
    root = build_speech_commands(tmp_path / "speech_commands_v0.02")
    for k, speaker in enumerate(["0a7c2a8d", "1b4c9e2f"]):
        speak(root / "cat" / f"{speaker}_nohash_0.wav", "cat", VOICES[k])  # a word outside the keywords
    out = PREPARERS.get("speech_commands")(root, tmp_path / "sc")
    for split in ("train", "valid", "test"):
        frame = read_manifest(out, "ks", split)
        silence = frame[frame["label"] == "_silence_"]
        assert len(silence) >= 1
        for path in silence["wav_path"]:
            info = sf.info(path)
            assert info.samplerate == 16000 and info.frames == 16000
    assert "background-noise recordings" in CorpusInfo.read(out).params["ks_silence"]
    assert _evaluate(out, tmp_path) == 0
    classes = _record(tmp_path)["config"]["labels"]["classes"]["keyword"]
    assert {"_silence_", "_unknown_", "yes", "no", "up"} <= set(classes)


def test_without_background_noise_or_words_ks_says_what_is_missing(tmp_path, caplog):
    root = build_speech_commands(tmp_path / "speech_commands_v0.02")
    shutil.rmtree(root / "_background_noise_")
    out = PREPARERS.get("speech_commands")(root, tmp_path / "sc")
    assert CorpusInfo.read(out).params["ks_silence"].startswith("none: no _background_noise_/ folder")
    assert not (read_manifest(out, "ks", "train")["label"] == "_silence_").any()
    build_librispeech(tmp_path / "corpora")
    libri = PREPARERS.get("librispeech")(tmp_path / "corpora", tmp_path / "libri")
    with caplog.at_level(logging.ERROR):
        assert _evaluate(libri, tmp_path) == 2
    assert "keyword spotting needs spoken words" in caplog.text
