"""Reading audio for every corpus and task: 16 kHz mono float32, or a clear error naming the file.

torchaudio 2.11 reads files only through torchcodec, so files are read with soundfile (WAV,
FLAC, OGG, ...) and converted with torchaudio's resampler. Conversions are deliberate and
logged once per cause (not once per file): several channels are averaged to mono, other sample
rates are resampled. A missing, unreadable (corrupt, headerless), empty, too short or NaN-carrying
file raises :class:`AudioError` naming the file.

This module is the one reader of audio here: :func:`load_audio` (a whole file),
:func:`load_audio_window` (a crop of one, as ``load_audio`` would return it), :func:`audio_info` and
:func:`audio_num_samples` (the header's rate and frames, and the length ``load_audio`` would return).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from core.audio import SAMPLE_RATE

logger = logging.getLogger(__name__)

MIN_SAMPLES = 400  # 25 ms: shorter clips give no frame to any 16 kHz speech model
# What soundfile raises for a file it cannot decode: libsndfile errors, and TypeError for a
# headerless file whose name says RAW (libsndfile would need its rate and format).
_READ_ERRORS = (sf.LibsndfileError, RuntimeError, TypeError)


class AudioError(ValueError):
    """A file that cannot be used as speech input; the message names the file and what to do."""


def audio_info(path: str | os.PathLike) -> tuple[int, int, int]:
    """Return ``(sample_rate, num_frames, num_channels)`` without reading the samples."""
    path = Path(path)
    _check_file(path)
    try:
        info = sf.info(str(path))
    except _READ_ERRORS as err:
        raise AudioError(f"{path}: unreadable audio ({err}); re-encode it as 16 kHz mono WAV or FLAC") from err
    return int(info.samplerate), int(info.frames), int(info.channels)


#: Sample formats that can hold NaN or infinite values (integer PCM, FLAC and the like cannot).
FLOAT_SUBTYPES = {"FLOAT", "DOUBLE"}


def check_finite(path: str | os.PathLike, block_frames: int = 1 << 16) -> None:
    """Raise :class:`AudioError` if a floating-point file holds NaN or infinite samples. Integer
    formats cannot, so only their header is read; float files are read block by block."""
    path = Path(path)
    _check_file(path)
    try:
        if sf.info(str(path)).subtype not in FLOAT_SUBTYPES:
            return
        for block in sf.blocks(str(path), blocksize=block_frames, dtype="float32", always_2d=True):
            if not np.isfinite(block).all():
                raise AudioError(f"{path}: contains NaN or infinite samples; the file is corrupt")
    except _READ_ERRORS as err:
        raise AudioError(f"{path}: unreadable audio ({err}); re-encode it as 16 kHz mono WAV or FLAC") from err


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Read a file as a mono float32 waveform at ``sample_rate``.

    Returns:
        Tensor: ``[time]`` waveform in [-1, 1].

    Raises:
        AudioError: the file is missing, unreadable, empty or too short.
    """
    path = Path(path)
    _check_file(path)
    try:
        data, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except _READ_ERRORS as err:
        raise AudioError(f"{path}: unreadable audio ({err}); re-encode it as 16 kHz mono WAV or FLAC") from err
    if data.shape[0] == 0:
        raise AudioError(f"{path}: no audio samples; regenerate or remove it from the manifest")
    wav = _mono(path, data)
    if file_rate != sample_rate:
        _note_once(f"rate{file_rate}", f"{path}: resampled {file_rate} Hz -> {sample_rate} Hz (logged once per rate)")
        wav = AF.resample(wav, file_rate, sample_rate)
    if wav.numel() < MIN_SAMPLES * sample_rate // SAMPLE_RATE:
        raise AudioError(
            f"{path}: only {wav.numel()} samples ({wav.numel() / sample_rate * 1000:.0f} ms); "
            f"speech models need at least {MIN_SAMPLES * 1000 // SAMPLE_RATE} ms"
        )
    return wav


def audio_num_samples(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> int:
    """The number of samples :func:`load_audio` returns for ``path`` at ``sample_rate``, from the
    header alone (no sample is read; the checks on the samples themselves are not made).

    At the file's own rate it is its frame count. Otherwise it is the length
    ``torchaudio.functional.resample`` gives: with both rates divided by their gcd,
    ``ceil(new * frames / orig)`` computed as torchaudio computes it, a Python float turned into a
    float32 tensor and rounded up there. The exact integer ceiling differs from that for long files
    (22050 Hz -> 16 kHz: from 361558 frames, about 16 s, on some lengths), so it is not used.

    Raises:
        AudioError: the file is missing, empty or unreadable.
    """
    file_rate, frames, _ = audio_info(path)
    if file_rate == sample_rate:
        return frames
    gcd = math.gcd(file_rate, sample_rate)
    orig, new = file_rate // gcd, sample_rate // gcd
    return int(torch.ceil(torch.as_tensor(new * frames / orig)))  # as in torchaudio's _apply_sinc_resample_kernel


def load_audio_window(
    path: str | os.PathLike, start: int, num_samples: int, sample_rate: int = SAMPLE_RATE
) -> torch.Tensor:
    """``load_audio(path, sample_rate)[start : start + num_samples]``, reading only that window
    when the file is already at ``sample_rate``.

    At the file's rate only ``num_samples`` frames from ``start`` are read and channels are averaged
    exactly as :func:`load_audio` averages them, so the values are identical to the slice; the window
    is checked for NaN and infinite samples (the rest of the file is not read). At another rate the
    whole file goes through :func:`load_audio` (resampling needs its neighbours) and is sliced, so a
    crop of such a file costs a full read.

    Returns:
        Tensor: ``[num_samples]`` float32 waveform.

    Raises:
        AudioError: the file is missing, unreadable or holds NaN / infinite samples, or the window
            starts before 0 or runs past the end of the audio (``audio_num_samples(path)`` samples).
    """
    path = Path(path)
    _check_file(path)
    try:
        with sf.SoundFile(str(path)) as f:
            if f.samplerate == sample_rate:
                _check_window(path, start, num_samples, f.frames)
                f.seek(start)
                data = f.read(num_samples, dtype="float32", always_2d=True)
            else:
                data = None
    except _READ_ERRORS as err:
        raise AudioError(f"{path}: unreadable audio ({err}); re-encode it as 16 kHz mono WAV or FLAC") from err
    if data is None:  # another rate: resample the whole file, then cut
        wav = load_audio(path, sample_rate)
        _check_window(path, start, num_samples, wav.numel())
        return wav[start : start + num_samples].clone()
    if data.shape[0] != num_samples:  # the header promised more frames than the file holds
        raise AudioError(f"{path}: truncated: {data.shape[0]} of {num_samples} samples read from {start}; "
                         "regenerate or remove it from the manifest")  # fmt: skip
    return _mono(path, data)


def _mono(path: Path, data: np.ndarray) -> torch.Tensor:
    """``[frames, channels]`` float32 samples read from ``path`` -> ``[frames]`` mono, channels
    averaged; NaN or infinite samples raise :class:`AudioError`."""
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: contains NaN or infinite samples; the file is corrupt")
    if data.shape[1] > 1:
        _note_once("downmix", f"{path}: {data.shape[1]} channels averaged to mono (logged once)")
        data = data.mean(axis=1, keepdims=True)
    return torch.from_numpy(np.ascontiguousarray(data[:, 0]))


def _check_window(path: Path, start: int, num_samples: int, length: int) -> None:
    if start < 0 or num_samples < 0 or start + num_samples > length:
        raise AudioError(
            f"{path}: window of {num_samples} samples from {start} runs outside its {length} samples"
        )


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes); regenerate or remove it from the manifest")


_NOTED: set[str] = set()


def _note_once(cause: str, message: str) -> None:
    """Log ``message`` the first time ``cause`` happens in this process (the first file stands for all)."""
    if cause not in _NOTED:
        _NOTED.add(cause)
        logger.info(message)
