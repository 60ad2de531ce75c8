"""Reading audio for every corpus and task: 16 kHz mono float32, or a clear error naming the file.

torchaudio 2.11 reads files only through torchcodec, so files are read with soundfile (WAV,
FLAC, OGG, ...) and converted with torchaudio's resampler. Conversions are deliberate and
logged once per cause (not once per file): several channels are averaged to mono, other sample
rates are resampled. A missing, unreadable (corrupt, headerless), empty, too short or NaN-carrying
file raises :class:`AudioError` naming the file.
"""

from __future__ import annotations

import logging
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
    if not np.isfinite(data).all():
        raise AudioError(f"{path}: contains NaN or infinite samples; the file is corrupt")
    if data.shape[1] > 1:
        _note_once("downmix", f"{path}: {data.shape[1]} channels averaged to mono (logged once)")
        data = data.mean(axis=1, keepdims=True)
    wav = torch.from_numpy(np.ascontiguousarray(data[:, 0]))
    if file_rate != sample_rate:
        _note_once(f"rate{file_rate}", f"{path}: resampled {file_rate} Hz -> {sample_rate} Hz (logged once per rate)")
        wav = AF.resample(wav, file_rate, sample_rate)
    if wav.numel() < MIN_SAMPLES * sample_rate // SAMPLE_RATE:
        raise AudioError(
            f"{path}: only {wav.numel()} samples ({wav.numel() / sample_rate * 1000:.0f} ms); "
            f"speech models need at least {MIN_SAMPLES * 1000 // SAMPLE_RATE} ms"
        )
    return wav


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
