"""Real-corpus preparers on tiny trees built here in each corpus' standard layout from eSpeak speech."""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from harness.cli import main as harness_main
from tasks.audio import load_audio
from tasks.corpora import PREPARERS
from tasks.corpora.espeak import VoiceSettings, get_espeak, phonemize
from tasks.corpora.manifest import (
    SLU_SEPARATOR,
    CorpusInfo,
    ManifestError,
    corpus_fingerprint,
    read_manifest,
)
from tasks.corpora.prepare_common import BadFile, handle_bad

VOICES = ["en-us+m3", "en-us+f2", "en-us+m7", "en-us+f4"]


@cache
def _speech(text: str, voice: str) -> np.ndarray:
    synthesis = get_espeak().synthesize(text, VoiceSettings(voice=voice))
    assert synthesis.sample_rate == 22050
    return resample_poly(synthesis.audio, 160, 441).astype(np.float32)  # 22.05 kHz -> 16 kHz


def speak(path: Path, text: str, voice: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, _speech(text, voice), 16000)  # format (FLAC or WAV) from the suffix


def corrupt(path: Path) -> None:
    path.write_bytes(b"this is not audio" * 50)


def check_rows(out: Path, task: str, split: str) -> list[dict]:
    """Read a manifest, check the columns every real-corpus manifest shares, return its rows."""
    frame = read_manifest(out, task, split, resolve=False)
    assert list(frame.columns[:4]) == ["id", "wav_path", "duration", "speaker"]
    for row in frame.to_dict("records"):
        assert os.path.isabs(row["wav_path"])
        info = sf.info(row["wav_path"])
        assert row["duration"] == pytest.approx(info.frames / info.samplerate, abs=1e-3)
    return frame.to_dict("records")


def check_corpus_json(out: Path, name: str) -> CorpusInfo:
    info = CorpusInfo.read(out)
    assert info.name == name
    assert info.fingerprint == corpus_fingerprint(out)
    assert info.hours > 0
    return info


# ---------------------------------------------------------------- LibriSpeech

LIBRI_TEXTS = ["THE CAT SAT ON THE MAT", "A QUICK BROWN FOX", "THE CAT SAT ON THE MAT", "SHE READ THE BOOK ALOUD"]


def build_librispeech(parent: Path, subsets=("train-clean-100", "dev-clean", "test-clean")) -> Path:
    """parent/LibriSpeech/SUBSET/SPK/CHAPTER/SPK-CHAPTER-UTT.flac with .trans.txt, 2 speakers x 2 utts."""
    root = parent / "LibriSpeech"
    for s, subset in enumerate(subsets):
        for k in range(2):
            speaker, chapter = str(100 * (s + 1) + k), str(10 + k)
            chapter_dir = root / subset / speaker / chapter
            lines = []
            for u in range(2):
                utt = f"{speaker}-{chapter}-{u:04d}"
                text = LIBRI_TEXTS[(s + k + u) % len(LIBRI_TEXTS)]
                speak(chapter_dir / f"{utt}.flac", text.lower(), VOICES[k])
                lines.append(f"{utt} {text}")
            (chapter_dir / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    return root


def test_librispeech_writes_asr_and_pr(tmp_path):
    root = build_librispeech(tmp_path / "corpora")
    out = PREPARERS.get("librispeech")(tmp_path / "corpora", tmp_path / "out")  # parent of LibriSpeech works
    assert out == tmp_path / "out"
    transcripts = {
        line.split(" ", 1)[0]: line.split(" ", 1)[1]
        for trans in root.rglob("*.trans.txt")
        for line in trans.read_text().splitlines()
    }
    for split, subset in [("train", "train-clean-100"), ("valid", "dev-clean"), ("test", "test-clean")]:
        asr, pr = check_rows(out, "asr", split), check_rows(out, "pr", split)
        assert [r["id"] for r in asr] == [r["id"] for r in pr]
        assert len(asr) == 4
        for a, p in zip(asr, pr, strict=True):
            assert f"/{subset}/" in a["wav_path"] and a["wav_path"].endswith(f"{a['id']}.flac")
            assert a["speaker"] == a["id"].split("-")[0]
            assert a["transcription"] == transcripts[a["id"]]
            assert p["transcription"] == " ".join(phonemize(a["transcription"]))
            assert len(p["transcription"].split()) > 5
    loaded = load_audio(asr[0]["wav_path"])
    assert loaded.numel() == pytest.approx(asr[0]["duration"] * 16000, abs=1)
    info = check_corpus_json(out, "librispeech")
    assert info.counts == {t: {"train": 4, "valid": 4, "test": 4} for t in ("asr", "pr")}
    assert info.params["splits"]["train"] == ["train-clean-100"] and info.params["skipped"] == []


#: A tiny lexicon in librispeech-lexicon.txt's form (stress digits, a second pronunciation of THE).
TINY_LEXICON = """\
THE\tDH AH0
THE\tDH IY1
CAT\tK AE1 T
SAT\tS AE1 T
ON\tAA1 N
MAT\tM AE1 T
A\tAH0
QUICK\tK W IH1 K
BROWN\tB R AW1 N
FOX\tF AA1 K S
SHE\tSH IY1
READ\tR EH1 D
BOOK\tB UH1 K
"""


def test_librispeech_pr_in_superbs_phone_set_from_the_lexicon(tmp_path):
    build_librispeech(tmp_path / "corpora")
    lexicon = tmp_path / "librispeech-lexicon.txt"
    lexicon.write_text(TINY_LEXICON + "ALOUD\tAH0 L AW1 D\n")
    out = tmp_path / "out"
    assert harness_main(["corpus", "prepare", "librispeech", "--root", str(tmp_path / "corpora"), "--out", str(out),
                         "--lexicon", str(lexicon)]) == 0  # fmt: skip
    asr, pr = check_rows(out, "asr", "train"), check_rows(out, "pr", "train")
    expected = {"THE CAT SAT ON THE MAT": "DH AH K AE T S AE T AA N DH AH M AE T",
                "A QUICK BROWN FOX": "AH K W IH K B R AW N F AA K S",
                "SHE READ THE BOOK ALOUD": "SH IY R EH D DH AH B UH K AH L AW D"}  # fmt: skip
    for a, p in zip(asr, pr, strict=True):
        assert p["transcription"] == expected[a["transcription"]]
    params = CorpusInfo.read(out).params
    assert params["phone_set"] == "arpabet-no-stress (librispeech lexicon)" and params["lexicon"]["words"] == 13
    espeak = PREPARERS.get("librispeech")(tmp_path / "corpora", tmp_path / "ipa")
    assert CorpusInfo.read(espeak).params["phone_set"] == "ipa (espeak-ng en-us)"


def test_librispeech_words_missing_from_the_lexicon_are_reported(tmp_path, caplog):
    build_librispeech(tmp_path / "corpora")
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_text(TINY_LEXICON)  # no ALOUD
    with pytest.raises(ManifestError, match="words missing from the lexicon") as failure:
        PREPARERS.get("librispeech")(tmp_path / "corpora", tmp_path / "out", lexicon=lexicon)
    assert "word(s) ALOUD not in the lexicon" in str(failure.value) and "--skip-bad" in str(failure.value)
    out = PREPARERS.get("librispeech")(tmp_path / "corpora", tmp_path / "out", lexicon=lexicon, skip_bad=True)
    skipped = CorpusInfo.read(out).params["skipped"]
    assert skipped and all("ALOUD" in entry["reason"] for entry in skipped)
    kept = [row["transcription"] for split in ("train", "valid", "test") for row in check_rows(out, "asr", split)]
    assert kept and not any("ALOUD" in text for text in kept)
    bad = tmp_path / "bad.txt"
    bad.write_text("THE DH AH0\nCAT\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: word 'CAT' has no phones"):
        PREPARERS.get("librispeech")(tmp_path / "corpora", tmp_path / "out2", lexicon=bad)
    assert harness_main(["corpus", "prepare", "voxceleb1", "--root", str(tmp_path), "--out", str(tmp_path / "v"),
                         "--lexicon", str(lexicon)]) == 2  # fmt: skip
    assert "only librispeech takes a lexicon" in caplog.text


def test_librispeech_bad_audio_fails_then_skips(tmp_path):
    root = build_librispeech(tmp_path, subsets=("train-clean-100", "dev-clean", "test-clean"))
    broken = root / "dev-clean/200/10/200-10-0001.flac"
    corrupt(broken)
    empty = root / "test-clean/300/10/300-10-0000.flac"
    empty.write_bytes(b"")
    stray = root / "train-clean-100/100/10/100-10-0009.flac"  # audio with no transcript line
    speak(stray, "hello", VOICES[0])
    with pytest.raises(ManifestError) as err:
        PREPARERS.get("librispeech")(root, tmp_path / "out")
    message = str(err.value)
    assert "3 bad audio file(s)" in message and "--skip-bad" in message
    for path in (broken, empty, stray):
        assert str(path) in message
    assert not (tmp_path / "out" / "corpus.json").exists()

    out = PREPARERS.get("librispeech")(root, tmp_path / "out", skip_bad=True)
    info = check_corpus_json(out, "librispeech")
    assert sorted(s["path"] for s in info.params["skipped"]) == sorted(map(str, (broken, empty, stray)))
    assert info.counts["asr"] == {"train": 4, "valid": 3, "test": 3}
    assert str(broken) not in {r["wav_path"] for r in check_rows(out, "pr", "valid")}


def test_librispeech_layout_errors_and_train_fallback(tmp_path):
    with pytest.raises(ManifestError, match="train-clean-100/SPEAKER/CHAPTER"):
        PREPARERS.get("librispeech")(tmp_path, tmp_path / "out")  # nothing there
    root = build_librispeech(tmp_path, subsets=("train-other-500", "dev-clean"))
    with pytest.raises(ManifestError, match="missing subset.*test-clean"):
        PREPARERS.get("librispeech")(root, tmp_path / "out")
    out = PREPARERS.get("librispeech")(root, tmp_path / "out", splits={"test": "dev-clean"})
    info = CorpusInfo.read(out)
    assert info.params["splits"] == {"train": ["train-other-500"], "valid": ["dev-clean"], "test": ["dev-clean"]}
    assert info.counts["pr"] == {"train": 4, "valid": 4, "test": 4}


# ---------------------------------------------------------------- VoxCeleb1


def build_voxceleb1(root: Path) -> Path:
    """Speakers split over ROOT/dev/wav and ROOT/test/wav (the two official archives), iden_split.txt."""
    lines = []
    for k, speaker in enumerate(["id10001", "id10002", "id10003"]):
        wav_dir = root / ("test" if k == 2 else "dev") / "wav"
        for u, code in enumerate([1, 1, 2, 3]):
            video = "1zcIwh-_deo4" if u < 2 else "Yq7x9Ab_01"
            path = wav_dir / speaker / video / f"{u + 1:05d}.wav"
            speak(path, ["open the door", "good morning", "seven", "thank you"][u], VOICES[k])
            lines.append(f"{code} {speaker}/{video}/{u + 1:05d}.wav")
    speak(root / "dev/wav/id10001/extra/00009.wav", "not in the split file", VOICES[0])
    (root / "iden_split.txt").write_text("\n".join(lines) + "\n")
    return root


def test_voxceleb1_writes_sid(tmp_path):
    root = build_voxceleb1(tmp_path / "vox1")
    out = PREPARERS.get("voxceleb1")(root, tmp_path / "out")
    rows = {split: check_rows(out, "sid", split) for split in ("train", "valid", "test")}
    assert [len(rows[s]) for s in ("train", "valid", "test")] == [6, 3, 3]
    for split_rows in rows.values():
        for row in split_rows:
            assert row["label"] == row["speaker"] == Path(row["wav_path"]).parts[-3]
            assert "extra" not in row["wav_path"]
    assert {r["speaker"] for r in rows["test"]} == {"id10001", "id10002", "id10003"}
    assert rows["train"][0]["id"] == "id10001-1zcIwh-_deo4-00001"
    assert any("/test/wav/id10003/" in r["wav_path"] for r in rows["valid"])
    check_corpus_json(out, "voxceleb1")


def test_voxceleb1_missing_file_and_bad_split_file(tmp_path):
    root = build_voxceleb1(tmp_path)
    gone = root / "dev/wav/id10002/Yq7x9Ab_01/00003.wav"
    gone.unlink()
    with pytest.raises(ManifestError, match="(?s)1 bad audio.*00003.wav: no such audio file.*--skip-bad"):
        PREPARERS.get("voxceleb1")(root, tmp_path / "out")
    out = PREPARERS.get("voxceleb1")(root, tmp_path / "out", skip_bad=True)
    assert CorpusInfo.read(out).params["skipped"] == [{"path": str(gone), "reason": "no such audio file"}]

    bad_split = tmp_path / "split.txt"
    bad_split.write_text("1 id10001/1zcIwh-_deo4/00001.wav\n4 id10001/x/00002.wav\n")
    with pytest.raises(ManifestError, match=r"split\.txt:2: expected 'SPLIT SPEAKER/VIDEO/UTT\.wav'"):
        PREPARERS.get("voxceleb1")(root, tmp_path / "out2", split_file=bad_split)
    (root / "iden_split.txt").unlink()
    with pytest.raises(ManifestError, match="no iden_split.txt"):
        PREPARERS.get("voxceleb1")(root, tmp_path / "out2")
    with pytest.raises(ManifestError, match="no wav/ folder"):
        PREPARERS.get("voxceleb1")(tmp_path / "out", tmp_path / "out2")


# ---------------------------------------------------------------- Fluent Speech Commands

FSC_COMMANDS = [  # transcription, action, object, location
    ("Turn on the lights in the kitchen", "activate", "lights", "kitchen"),
    ("Increase the heating", "increase", "heat", "none"),
    ("Bring me my shoes", "bring", "shoes", "none"),
]


def build_fluent_commands(parent: Path) -> Path:
    root = parent / "fluent_speech_commands_dataset"
    (root / "data").mkdir(parents=True)
    for s, split in enumerate(("train", "valid", "test")):
        lines = [",path,speakerId,transcription,action,object,location"]
        for k, speaker in enumerate(["2BqVo8kVB2Skwgyb", "4aGjX3AG5xcxeL7a"][: 2 if split == "train" else 1]):
            for c, (text, action, obj, location) in enumerate(FSC_COMMANDS):
                relative = f"wavs/speakers/{speaker}/{s}{k}{c}-uuid.wav"
                speak(root / relative, text, VOICES[k + s])
                lines.append(f"{len(lines) - 1},{relative},{speaker},{text},{action},{obj},{location}")
        (root / "data" / f"{split}_data.csv").write_text("\n".join(lines) + "\n")
    return root


def test_fluent_commands_writes_slu(tmp_path):
    root = build_fluent_commands(tmp_path)
    out = PREPARERS.get("fluent_commands")(tmp_path, tmp_path / "out")
    train = check_rows(out, "slu", "train")
    assert len(train) == 6 and len(check_rows(out, "slu", "valid")) == len(check_rows(out, "slu", "test")) == 3
    assert train[1]["labels"] == SLU_SEPARATOR.join(["increase", "heat", "none"]) == "increase ; heat ; none"
    assert train[1]["transcription"] == "Increase the heating"
    assert train[1]["speaker"] == "2BqVo8kVB2Skwgyb" and train[1]["id"] == "001-uuid"
    assert train[1]["wav_path"] == str(root / "wavs/speakers/2BqVo8kVB2Skwgyb/001-uuid.wav")
    check_corpus_json(out, "fluent_commands")


def test_fluent_commands_too_short_and_layout(tmp_path):
    root = build_fluent_commands(tmp_path)
    short = root / "wavs/speakers/2BqVo8kVB2Skwgyb/200-uuid.wav"
    sf.write(short, np.zeros(160, np.float32), 16000)  # 10 ms
    with pytest.raises(ManifestError, match="too short"):
        PREPARERS.get("fluent_commands")(root, tmp_path / "out")
    out = PREPARERS.get("fluent_commands")(root, tmp_path / "out", skip_bad=True)
    assert [r["id"] for r in check_rows(out, "slu", "test")] == ["201-uuid", "202-uuid"]

    (root / "data/test_data.csv").unlink()
    with pytest.raises(ManifestError, match="missing data/test_data.csv.*\n.*train_data.csv"):
        PREPARERS.get("fluent_commands")(root, tmp_path / "out")
    (root / "data/test_data.csv").write_text(",path,speakerId,transcription,action\n")
    with pytest.raises(ManifestError, match=r"test_data\.csv: missing column\(s\) \['object', 'location'\]"):
        PREPARERS.get("fluent_commands")(root, tmp_path / "out")


# ---------------------------------------------------------------- Speech Commands v0.02


def build_speech_commands(root: Path) -> Path:
    for word in ["yes", "no", "up"]:
        for k, speaker in enumerate(["0a7c2a8d", "1b4c9e2f", "c3d5e6f7"]):
            speak(root / word / f"{speaker}_nohash_0.wav", word, VOICES[k])
    speak(root / "_background_noise_" / "white_noise.wav", "this is noise", VOICES[3])
    (root / "validation_list.txt").write_text("yes/1b4c9e2f_nohash_0.wav\nno/1b4c9e2f_nohash_0.wav\n")
    (root / "testing_list.txt").write_text("yes/c3d5e6f7_nohash_0.wav\nup/c3d5e6f7_nohash_0.wav\n")
    return root


def test_speech_commands_writes_words_with_speakers(tmp_path):
    root = build_speech_commands(tmp_path / "speech_commands_v0.02")
    out = PREPARERS.get("speech_commands")(tmp_path, tmp_path / "out")
    rows = {split: check_rows(out, "words", split) for split in ("train", "valid", "test")}
    assert sorted(r["id"] for r in rows["test"]) == ["up-c3d5e6f7_nohash_0", "yes-c3d5e6f7_nohash_0"]
    assert sorted(r["id"] for r in rows["valid"]) == ["no-1b4c9e2f_nohash_0", "yes-1b4c9e2f_nohash_0"]
    assert len(rows["train"]) == 9 - 4
    for row in [r for split_rows in rows.values() for r in split_rows]:
        assert row["label"] == row["id"].split("-")[0] == Path(row["wav_path"]).parent.name
        assert row["speaker"] == Path(row["wav_path"]).name.split("_nohash_")[0]
        assert "_background_noise_" not in row["wav_path"]
    assert check_corpus_json(out, "speech_commands").params["words"] == ["no", "up", "yes"]

    only = PREPARERS.get("speech_commands")(root, tmp_path / "only", words=["yes", "up"])
    assert {r["label"] for r in check_rows(only, "words", "train")} == {"yes", "up"}


def test_speech_commands_cli_bad_file_and_layout(tmp_path, caplog):
    root = build_speech_commands(tmp_path / "sc")
    corrupt(root / "no" / "0a7c2a8d_nohash_0.wav")
    out = tmp_path / "out"
    args = ["corpus", "prepare", "speech_commands", "--root", str(root), "--out", str(out)]
    assert harness_main(args) == 2
    assert "0a7c2a8d_nohash_0.wav: unreadable audio" in caplog.text and "--skip-bad" in caplog.text
    assert not (out / "corpus.json").exists()
    assert harness_main([*args, "--skip-bad"]) == 0
    info = json.loads((out / "corpus.json").read_text())
    # ks: the same clips plus one-second crops of the background noise for _silence_ (1 per split here)
    assert info["counts"] == {"words": {"train": 4, "valid": 2, "test": 2}, "ks": {"train": 5, "valid": 3, "test": 3}}
    assert [s["path"] for s in info["params"]["skipped"]] == [str(root / "no" / "0a7c2a8d_nohash_0.wav")]

    (root / "testing_list.txt").unlink()
    with pytest.raises(ManifestError, match="missing testing_list.txt"):
        PREPARERS.get("speech_commands")(root, tmp_path / "out2")


def test_prepare_into_another_corpus_refused_and_rerun_replaces(tmp_path):
    root = build_speech_commands(tmp_path / "sc")
    out = PREPARERS.get("speech_commands")(root, tmp_path / "out")
    first = CorpusInfo.read(out).fingerprint
    (root / "testing_list.txt").write_text("yes/c3d5e6f7_nohash_0.wav\n")
    assert CorpusInfo.read(PREPARERS.get("speech_commands")(root, out)).fingerprint != first
    assert len(read_manifest(out, "words", "test")) == 1
    with pytest.raises(ManifestError, match="already holds corpus 'speech_commands'"):
        PREPARERS.get("fluent_commands")(build_fluent_commands(tmp_path), out)


def test_bad_file_report_lists_first_twenty_and_counts_the_rest(tmp_path):
    bad = [BadFile(tmp_path / f"clip{i:02d}.wav", "unreadable audio") for i in range(25)]
    with pytest.raises(ManifestError) as err:
        handle_bad(bad, "demo", tmp_path, skip_bad=False)
    message = str(err.value)
    assert "25 bad audio file(s)" in message and "clip19.wav" in message and "clip20.wav" not in message
    assert "... and 5 more" in message and "--skip-bad" in message
    assert len(handle_bad(bad, "demo", tmp_path, skip_bad=True)) == 25
