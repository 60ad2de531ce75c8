"""Bad audio input through load_audio / audio_info, windows and lengths that agree with load_audio,
and manifests that are never half-written."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from tasks import audio
from tasks.audio import MIN_SAMPLES, AudioError, audio_info, audio_num_samples, load_audio, load_audio_window
from tasks.corpora.manifest import ManifestError, read_manifest, write_manifest


def sine(freq: float, rate: int, seconds: float = 1.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_frequency(wav: torch.Tensor, rate: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(wav.numpy() * np.hanning(wav.numel())))
    return float(np.fft.rfftfreq(wav.numel(), 1 / rate)[spectrum.argmax()])


def test_clean_16k_mono_is_returned_unchanged(tmp_path):
    path = tmp_path / "clean.wav"
    signal = sine(440, 16000)
    sf.write(path, signal, 16000, subtype="FLOAT")
    wav = load_audio(path)
    assert wav.dtype == torch.float32 and wav.shape == (16000,)
    torch.testing.assert_close(wav, torch.from_numpy(signal))
    assert audio_info(path) == (16000, 16000, 1)


@pytest.mark.parametrize("name", ["corrupt.wav", "corrupt.flac", "corrupt", "corrupt.raw"])
def test_corrupt_bytes_raise_naming_the_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(0).bytes(4000))
    for read in (load_audio, audio_info):
        with pytest.raises(AudioError, match="unreadable audio") as err:
            read(path)
        assert str(path) in str(err.value) and "re-encode" in str(err.value)


def test_empty_file_raises(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    for read in (load_audio, audio_info):
        with pytest.raises(AudioError, match="empty file") as err:
            read(path)
        assert str(path) in str(err.value)


def test_header_without_samples_raises(tmp_path):
    path = tmp_path / "no_samples.wav"
    sf.write(path, np.zeros(0, np.float32), 16000)
    assert audio_info(path) == (16000, 0, 1)
    with pytest.raises(AudioError, match="no audio samples") as err:
        load_audio(path)
    assert str(path) in str(err.value)


def test_too_short_file_raises(tmp_path):
    path = tmp_path / "short.wav"
    sf.write(path, sine(440, 16000, seconds=0.01), 16000)  # 160 samples < 400
    with pytest.raises(AudioError, match=r"only 160 samples \(10 ms\).*at least 25 ms") as err:
        load_audio(path)
    assert str(path) in str(err.value)
    sf.write(path, sine(440, 16000)[:MIN_SAMPLES], 16000)  # exactly the minimum is fine
    assert load_audio(path).numel() == MIN_SAMPLES


def test_too_short_after_resampling_raises(tmp_path):
    path = tmp_path / "short8k.wav"
    sf.write(path, sine(440, 8000)[:150], 8000)  # 150 samples at 8 kHz = 300 at 16 kHz
    with pytest.raises(AudioError, match="only 300 samples"):
        load_audio(path)


@pytest.mark.parametrize(("rate", "freq"), [(44100, 440.0), (8000, 1000.0), (22050, 3000.0)])
def test_other_rates_are_resampled_keeping_pitch(tmp_path, rate, freq):
    path = tmp_path / f"tone_{rate}.wav"
    sf.write(path, sine(freq, rate, seconds=1.0), rate, subtype="FLOAT")
    wav = load_audio(path)
    assert wav.shape == (16000,)
    assert peak_frequency(wav) == pytest.approx(freq, abs=1.0)
    assert wav[1000:-1000].abs().max().item() == pytest.approx(0.5, abs=0.02)  # amplitude kept, no clipping


def test_resampling_is_logged_once_per_rate_not_per_file(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(audio, "_NOTED", set())
    for i in range(3):
        sf.write(tmp_path / f"a{i}.wav", sine(440, 44100, 0.1), 44100)
    sf.write(tmp_path / "b.wav", sine(440, 8000, 0.1), 8000)
    with caplog.at_level(logging.INFO, logger="tasks.audio"):
        for name in ["a0.wav", "a1.wav", "a2.wav", "b.wav"]:
            load_audio(tmp_path / name)
    messages = [r.getMessage() for r in caplog.records if "resampled" in r.getMessage()]
    assert len(messages) == 2 and "44100 Hz" in messages[0] and "8000 Hz" in messages[1]


@pytest.mark.parametrize("channels", [2, 3])
def test_several_channels_are_averaged(tmp_path, channels):
    path = tmp_path / f"multi{channels}.wav"
    data = np.stack([sine(300 * (c + 1), 16000, amplitude=0.3) for c in range(channels)], axis=1)
    sf.write(path, data, 16000, subtype="FLOAT")
    assert audio_info(path) == (16000, 16000, channels)
    wav = load_audio(path)
    assert wav.shape == (16000,)
    torch.testing.assert_close(wav, torch.from_numpy(data.mean(axis=1)))


def test_stereo_at_another_rate_is_downmixed_then_resampled(tmp_path):
    path = tmp_path / "stereo44k.wav"
    tone = sine(440, 44100)
    sf.write(path, np.stack([tone, np.zeros_like(tone)], axis=1), 44100, subtype="FLOAT")  # right silent
    wav = load_audio(path)
    assert wav.shape == (16000,) and peak_frequency(wav) == pytest.approx(440, abs=1.0)
    assert wav[1000:-1000].abs().max().item() == pytest.approx(0.25, abs=0.01)  # mean of 0.5 and 0


def test_a_window_of_a_16k_stereo_file_is_the_slice_of_load_audio(tmp_path):
    path = tmp_path / "stereo16k.wav"
    data = np.stack([sine(300, 16000, amplitude=0.3), sine(700, 16000, amplitude=0.4)], axis=1)
    sf.write(path, data, 16000)  # PCM_16: the channel mean is not a plain copy of either channel
    full = load_audio(path)
    assert audio_num_samples(path) == full.numel() == 16000
    for start, size in [(0, 400), (1234, 5000), (16000 - 777, 777)]:
        window = load_audio_window(path, start, size)
        assert window.dtype == torch.float32 and torch.equal(window, full[start : start + size])


@pytest.mark.parametrize(("rate", "frames"), [(22050, 22057), (22050, 361558), (44100, 44103)])
def test_length_and_window_of_a_file_at_another_rate_agree_with_load_audio(tmp_path, rate, frames):
    """361558 frames at 22050 Hz: the exact ceil(frames * 320 / 441) is one more than torchaudio returns."""
    path = tmp_path / f"tone_{rate}_{frames}.flac"
    sf.write(path, np.resize(sine(440, rate), frames), rate)
    full = load_audio(path)
    assert audio_num_samples(path) == full.numel()
    start = full.numel() // 3
    assert torch.equal(load_audio_window(path, start, 4000), full[start : start + 4000])
    assert torch.equal(load_audio_window(path, full.numel() - 400, 400), full[-400:])  # up to the last sample


@pytest.mark.parametrize("rate", [16000, 22050])
def test_a_window_past_the_end_raises_naming_the_file(tmp_path, rate):
    path = tmp_path / f"one_second_{rate}.wav"
    sf.write(path, sine(440, rate), rate)
    length = audio_num_samples(path)
    for start, size in [(length - 399, 400), (length + 10, 1), (-1, 400)]:
        with pytest.raises(AudioError, match="runs outside") as err:
            load_audio_window(path, start, size)
        assert str(path) in str(err.value)
    with pytest.raises(AudioError, match="no such audio file"):
        load_audio_window(tmp_path / "missing.wav", 0, 400)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_nan_or_infinite_samples_raise(tmp_path, bad_value):
    path = tmp_path / "nan.wav"
    data = sine(440, 16000)
    data[500] = bad_value
    sf.write(path, data, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN or infinite") as err:
        load_audio(path)
    assert str(path) in str(err.value)


def test_missing_file_raises(tmp_path):
    path = tmp_path / "nowhere" / "missing.flac"
    for read in (load_audio, audio_info):
        with pytest.raises(AudioError, match="no such audio file") as err:
            read(path)
        assert str(path) in str(err.value)
    assert issubclass(AudioError, ValueError)  # the CLI reports ValueErrors as one clean line


def _manifest_rows(n: int) -> list[dict]:
    return [
        {"id": f"u{i}", "wav_path": f"wavs/u{i}.wav", "duration": 1.0, "speaker": "s1", "label": "s1"} for i in range(n)
    ]


def test_write_manifest_failing_mid_write_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = write_manifest(_manifest_rows(3), tmp_path, "sid", "train")
    before = path.read_bytes()

    def write_half_then_fail(frame, f, **kwargs):
        f.write("id,wav_path,duration,speaker,label\nu0,wavs/u0")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_manifest(_manifest_rows(5), tmp_path, "sid", "train")
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["train.csv"]
    assert len(read_manifest(tmp_path, "sid", "train", resolve=False)) == 3  # the wavs are not made here

    write_manifest(_manifest_rows(5), tmp_path, "sid", "train")  # a successful rewrite replaces it whole
    assert len(read_manifest(tmp_path, "sid", "train", resolve=False)) == 5
    assert sorted(p.name for p in path.parent.iterdir()) == ["train.csv"]


def test_write_manifest_refuses_bad_rows_without_touching_disk(tmp_path):
    with pytest.raises(ManifestError, match=r"missing columns \['label'\]"):
        write_manifest([{"id": "a", "wav_path": "a.wav", "duration": 1.0, "speaker": "s"}], tmp_path, "sid", "train")
    with pytest.raises(ManifestError, match="duplicate id 'u0'"):
        write_manifest(_manifest_rows(2) + _manifest_rows(1), tmp_path, "sid", "train")
    assert not (tmp_path / "manifests").exists()
