"""SynthSpeech: determinism, splits, manifest columns, alignments, reuse and interrupted runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.cli import main as harness_main
from tasks.audio import load_audio
from tasks.corpora import synth, synth_audio
from tasks.corpora.checksums import verify_corpus
from tasks.corpora.espeak import VoiceSettings, get_espeak, phonemize
from tasks.corpora.manifest import (
    CHECKSUMS,
    SPLITS,
    TASK_LABEL_COLUMN,
    CorpusInfo,
    ManifestError,
    parse_alignment,
    read_manifest,
)


def _all(root, task):
    return {split: read_manifest(root, task, split) for split in SPLITS}


#: The manifests SynthSpeech writes: every kind but ks (KS reads SynthSpeech's words; there is no noise to crop).
SYNTH_MANIFESTS = {task: label for task, label in TASK_LABEL_COLUMN.items() if task != "ks"}


def test_manifest_columns_and_audio(synth_corpus):
    for task, label in SYNTH_MANIFESTS.items():
        for split, frame in _all(synth_corpus, task).items():
            assert len(frame) > 0, (task, split)
            for column in ["id", "wav_path", "duration", "speaker", label, "word_alignment", "phone_alignment"]:
                assert column in frame.columns, (task, column)
            assert (frame[label].str.len() > 0).all()
    frame = read_manifest(synth_corpus, "slu", "train")
    assert all(len(labels.split(" ; ")) == 3 for labels in frame["labels"])
    asr = read_manifest(synth_corpus, "asr", "valid")
    assert (asr["transcription"] == asr["transcription"].str.upper()).all()
    wav = load_audio(asr["wav_path"][0])
    assert abs(wav.numel() / 16000 - asr["duration"][0]) < 1e-3
    assert 0.01 < wav.abs().max() <= 1.0


def test_test_sentences_never_in_training(synth_corpus):
    for task in ("asr", "slu"):
        frames = _all(synth_corpus, task)
        train = set(frames["train"]["transcription"])
        assert not train & set(frames["test"]["transcription"]), task
        assert not train & set(frames["valid"]["transcription"]), task
    slu = _all(synth_corpus, "slu")
    assert set(slu["test"]["labels"]) - set(slu["train"]["labels"]) != set(slu["test"]["labels"])  # intents shared


def test_speaker_splits(synth_corpus):
    sid = _all(synth_corpus, "sid")
    speakers = {split: set(frame["label"]) for split, frame in sid.items()}
    assert speakers["train"] == speakers["test"] == speakers["valid"]  # identification: same speakers
    assert len(speakers["train"]) == synth.PRESETS["micro"].speakers
    words = _all(synth_corpus, "words")
    word_speakers = {split: set(frame["speaker"]) for split, frame in words.items()}
    assert not word_speakers["train"] & word_speakers["test"]  # Speech Commands style: split by speaker
    assert (words["train"]["duration"] == 1.0).mean() > 0.9  # one-second clips


def test_alignments_match_transcripts(synth_corpus):
    pr = read_manifest(synth_corpus, "pr", "train")
    for _, row in pr.head(20).iterrows():
        phones = parse_alignment(row["phone_alignment"])
        assert [p for p, _, _ in phones] == row["transcription"].split()
        starts = [s for _, s, _ in phones]
        assert starts == sorted(starts)
        assert all(0 <= s <= e <= row["duration"] + 1e-3 for _, s, e in phones)  # eSpeak emits a few 0 ms phones
        assert sum(e > s for _, s, e in phones) >= 0.9 * len(phones)
    asr = read_manifest(synth_corpus, "asr", "train")
    for _, row in asr.head(20).iterrows():
        words = " ".join(w for w, _, _ in parse_alignment(row["word_alignment"]))
        assert words.upper() == row["transcription"]


def test_checksums_and_info(synth_corpus):
    lines = (synth_corpus / CHECKSUMS).read_text().splitlines()
    info = CorpusInfo.read(synth_corpus)
    assert len(lines) == sum(len(read_manifest(synth_corpus, t, s)) for t in ("sid", "slu", "words") for s in SPLITS)
    assert info.params["preset"] == "micro" and info.params["seed"] == 0
    assert info.hours * 60 > 5
    assert verify_corpus(synth_corpus) == []


def test_same_seed_identical_other_seed_different(synth_corpus, tmp_path):
    again = synth.synthesize_corpus(tmp_path / "again", preset="micro", seed=0, workers=1)
    assert (again / CHECKSUMS).read_bytes() == (synth_corpus / CHECKSUMS).read_bytes()
    for task in SYNTH_MANIFESTS:
        for split in SPLITS:
            rel = f"manifests/{task}/{split}.csv"
            assert (again / rel).read_bytes() == (synth_corpus / rel).read_bytes(), rel
    assert CorpusInfo.read(again).fingerprint == CorpusInfo.read(synth_corpus).fingerprint
    jobs_other = synth.plan_jobs(synth.PRESETS["micro"], seed=1)
    jobs_same = synth.plan_jobs(synth.PRESETS["micro"], seed=0)
    assert [j.text for j in jobs_other] != [j.text for j in jobs_same]


def test_interrupted_run_is_never_used_and_resumes(synth_corpus, tmp_path, monkeypatch):
    out = tmp_path / "killed"
    real_run_jobs = synth._run_jobs

    def killed_after_30(todo, workers):
        for i, row in enumerate(real_run_jobs(todo, workers)):
            if i == 30:
                raise KeyboardInterrupt
            yield row

    monkeypatch.setattr(synth, "_run_jobs", killed_after_30)
    with pytest.raises(KeyboardInterrupt):
        synth.synthesize_corpus(out, preset="micro", seed=0, workers=2)
    with pytest.raises(ManifestError, match="not a complete corpus"):
        CorpusInfo.read(out)
    assert not (out / "manifests").exists()
    assert len((out / synth.PROGRESS).read_text().splitlines()) == 1 + 30  # header + rows

    resumed = []
    monkeypatch.setattr(synth, "_run_jobs", lambda todo, workers: resumed.extend(todo) or real_run_jobs(todo, workers))
    synth.synthesize_corpus(out, preset="micro", seed=0, workers=2)
    assert len(resumed) == len(synth.plan_jobs(synth.PRESETS["micro"], 0)) - 30  # only the rest was made
    assert (out / CHECKSUMS).read_bytes() == (synth_corpus / CHECKSUMS).read_bytes()
    assert not (out / synth.PROGRESS).exists()


def test_rerun_reuses_and_refuses_other_settings(synth_corpus, tmp_path):
    before = (synth_corpus / "corpus.json").stat().st_mtime_ns
    synth.synthesize_corpus(synth_corpus, preset="micro", seed=0)
    assert (synth_corpus / "corpus.json").stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="different corpus"):
        synth.synthesize_corpus(synth_corpus, preset="micro", seed=3)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a SynthSpeech corpus"):
        synth.synthesize_corpus(foreign, preset="micro")
    with pytest.raises(ValueError, match="unknown SynthSpeech preset"):
        synth.synthesize_corpus(tmp_path / "x", preset="huge")


def test_verify_detects_tampering(tmp_path, synth_corpus):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(synth_corpus, copy)
    rel = (copy / CHECKSUMS).read_text().splitlines()[0].split("  ")[1]
    (copy / rel).write_bytes(b"RIFF" + b"\0" * 100)
    assert verify_corpus(copy) == [rel]


def test_voice_variants_are_deterministic():
    """Variants with a "breath" setting make different noise in every process; they must stay out."""
    import espeakng_loader

    variants = Path(espeakng_loader.get_data_path()) / "voices" / "!v"
    for name in synth_audio.VARIANTS:
        text = (variants / name).read_text(errors="replace")
        assert not any(line.split()[:1] == ["breath"] for line in text.splitlines()), name


def test_speakers_are_distinct_and_learnable():
    preset = synth.PRESETS["tiny"]
    speakers = synth_audio.make_speakers(preset.speakers, np.random.default_rng(0))
    assert preset.speakers >= 24
    assert len({(s.voice, s.lowpass_hz) for s in speakers}) == len(speakers)
    assert len({s.voice.voice for s in speakers}) == len(speakers)  # accent+variant unique in tiny


def test_tiny_preset_size(tmp_path):
    root = synth.synthesize_corpus(tmp_path / "tiny", preset="tiny", seed=0)
    info = CorpusInfo.read(root)
    assert info.hours * 60 >= 30
    assert len(set(read_manifest(root, "sid", "train")["label"])) >= 24
    assert sum(info.counts["slu"].values()) > 300
    # the test splits are large and balanced: every speaker has the same number of test utterances
    tiny = synth.PRESETS["tiny"]
    per_speaker = read_manifest(root, "sid", "test")["label"].value_counts()
    assert len(per_speaker) == tiny.speakers and set(per_speaker) == {tiny.test_sentences_per_speaker}
    slu_test = read_manifest(root, "slu", "test")
    assert set(slu_test["speaker"].value_counts()) == {tiny.test_commands_per_speaker}
    assert len(read_manifest(root, "sid", "train")) == tiny.speakers * 48
    assert len(read_manifest(root, "sid", "valid")) == tiny.speakers * 6
    assert len(read_manifest(root, "slu", "train")) == tiny.speakers * 64


def test_presets_without_test_sizes_keep_their_parameters():
    """Corpora made before test sizes existed (the teacher's pretraining corpus) keep their params."""
    assert synth.PRESETS["small"].params() == {
        "speakers": 48, "sentences_per_speaker": 60, "commands_per_speaker": 32, "words_per_speaker": 30,
        "sentence_pool": 2400,
    }  # fmt: skip
    assert synth.PRESETS["tiny"].params()["test_commands_per_speaker"] == 120


def test_espeak_timings_and_phonemizer():
    synthesis = get_espeak().synthesize("turn on the kitchen lights", VoiceSettings(voice="en-us"))
    assert synthesis.sample_rate == 22050
    assert [w for w, _, _ in synthesis.words] == ["turn", "on the", "kitchen", "lights"]
    assert synthesis.words[-1][2] <= len(synthesis.audio) / synthesis.sample_rate + 1e-3
    assert [p for p, _, _ in synthesis.phones] == phonemize("turn on the kitchen lights")
    with pytest.raises(ValueError, match="no voice"):
        get_espeak().synthesize("hello", VoiceSettings(voice="xx-nope"))


def test_cli_synth(tmp_path, caplog):
    assert harness_main(["corpus", "synth", "--out", str(tmp_path / "c"), "--preset", "micro", "--workers", "2"]) == 0
    info = json.loads((tmp_path / "c" / "corpus.json").read_text())
    assert info["name"] == "synthspeech"
    assert harness_main(["corpus", "synth", "--out", str(tmp_path / "c"), "--preset", "nope"]) == 2
    frame = pd.read_csv(tmp_path / "c" / "manifests" / "sid" / "test.csv")
    assert not frame["wav_path"].str.startswith("/").any()  # relative: the corpus can be moved
