"""The audio side of SynthSpeech: speakers, and turning one planned utterance into a wav file.

This module runs in the synthesis worker processes, so it imports only what rendering needs
(no pandas, no torch): each utterance is rendered in a fork of the worker (see
:func:`synthesize_in_fork`), and forks of a small process are cheap.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.signal
import soundfile as sf

from core.audio import SAMPLE_RATE
from core.files import atomic_path, sha256_file, write_error
from tasks.corpora.alignment import format_alignment
from tasks.corpora.espeak import Synthesis, VoiceSettings, get_espeak

ACCENTS = ["en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-us-nyc", "en-gb-x-gbclan", "en-gb-x-gbcwmd"]
VARIANTS = [
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f4", "klatt", "klatt2", "klatt3", "Alex", "Andy",
    "Annie", "adam", "anika", "aunty", "belinda", "benjamin", "david", "ed",
    "edward", "grandma", "grandpa", "ian", "iven", "john", "linda", "max", "michel", "norbert", "paul",
    "quincy", "rob", "robert", "shelby", "steph", "travis", "Denis", "Gene", "Hugo", "Lee", "Mike",
]  # fmt: skip
# Left out: variants with a "breath" setting (f2, f3, f5, caleb, ...), whose noise differs from run to run.


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: eSpeak settings plus a recording channel."""

    id: str
    voice: VoiceSettings
    highpass_hz: float
    lowpass_hz: float
    snr_db: float  # mean signal-to-noise ratio of this speaker's recordings
    level_db: float  # peak level


@dataclass(frozen=True)
class Job:
    """One utterance to synthesise."""

    index: int
    id: str
    kind: str  # sentence | command | word
    speaker: Speaker
    text: str
    split: str
    intent: tuple[str, str, str] | None
    seed: int


def make_speakers(count: int, rng: np.random.Generator) -> list[Speaker]:
    """``count`` distinct speakers; accents and variants are spread evenly before they repeat."""
    variants = [VARIANTS[i] for i in rng.permutation(len(VARIANTS))]
    speakers = []
    for i in range(count):
        voice = VoiceSettings(
            voice=f"{ACCENTS[i % len(ACCENTS)]}+{variants[i % len(variants)]}",
            rate=int(rng.integers(135, 200)),
            pitch=int(rng.integers(15, 85)),
            pitch_range=int(rng.integers(20, 85)),
            word_gap=int(rng.integers(0, 3)),
        )
        speakers.append(
            Speaker(
                id=f"spk{i:03d}",
                voice=voice,
                highpass_hz=float(rng.uniform(50, 250)),
                lowpass_hz=float(rng.uniform(3400, 7600)),
                snr_db=float(rng.uniform(18, 40)),
                level_db=float(rng.uniform(-12, -2)),
            )
        )
    return speakers


def render(job: Job) -> tuple[np.ndarray, list, list]:
    """Synthesise one utterance through its speaker's channel: 16 kHz float32 audio and timings."""
    rng = np.random.default_rng(job.seed)
    base = job.speaker.voice
    voice = VoiceSettings(
        voice=base.voice,
        rate=int(np.clip(base.rate + rng.integers(-10, 11), 80, 450)),
        pitch=int(np.clip(base.pitch + rng.integers(-5, 6), 0, 100)),
        pitch_range=int(np.clip(base.pitch_range + rng.integers(-8, 9), 0, 100)),
        word_gap=base.word_gap,
    )
    return record(get_espeak().synthesize(job.text, voice), job, rng)


def record(synthesis: Synthesis, job: Job, rng: np.random.Generator) -> tuple[np.ndarray, list, list]:
    """The speaker's channel: resample to 16 kHz, band-limit, pad, set the level, add coloured noise."""
    speech = scipy.signal.resample_poly(synthesis.audio, SAMPLE_RATE, synthesis.sample_rate).astype(np.float32)
    sos = scipy.signal.butter(
        4, [job.speaker.highpass_hz, job.speaker.lowpass_hz], btype="bandpass", fs=SAMPLE_RATE, output="sos"
    )
    speech = scipy.signal.sosfilt(sos, speech).astype(np.float32)

    if job.kind == "word":  # one-second clips, as in Speech Commands
        room = max(0, SAMPLE_RATE - len(speech))
        lead = int(rng.uniform(0.2, 0.8) * room)
        tail = room - lead
    else:
        lead = int(rng.uniform(0.05, 0.25) * SAMPLE_RATE)
        tail = int(rng.uniform(0.05, 0.2) * SAMPLE_RATE)
    audio = np.concatenate([np.zeros(lead, np.float32), speech, np.zeros(tail, np.float32)])
    peak = np.abs(audio).max() or 1.0
    level = 10 ** ((job.speaker.level_db + rng.uniform(-1.5, 1.5)) / 20)
    audio *= level / peak
    snr_db = job.speaker.snr_db + rng.uniform(-4, 4)
    signal_power = float(np.mean(speech**2)) * (level / peak) ** 2
    noise = scipy.signal.lfilter([1.0], [1.0, -0.7], rng.standard_normal(len(audio))).astype(np.float32)
    noise *= np.sqrt(signal_power / (np.mean(noise**2) * 10 ** (snr_db / 10)))
    audio = np.clip(audio + noise, -1.0, 1.0)

    shift = lead / SAMPLE_RATE
    phones = [(p, s + shift, e + shift) for p, s, e in synthesis.phones]
    words = [(w, s + shift, e + shift) for w, s, e in synthesis.words]
    return audio, phones, words


@functools.cache
def _prepare_worker() -> None:
    """Bring this worker into the state every utterance starts from: eSpeak initialised and warmed
    up by one fixed utterance, and the channel and file writing run once on it, so that forked
    children find every lazy import, table and cache already loaded."""
    warmup = Job(0, "warmup", "sentence", make_speakers(1, np.random.default_rng(0))[0], "warm up", "train", None, 0)
    audio, _, _ = render(warmup)
    sf.write(io.BytesIO(), audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    hashlib.sha256(audio.tobytes()).hexdigest()
    json.dumps({"warm": [1.0]})
    gc.freeze()  # forked children then never walk (and copy) the objects inherited from here


def synthesize_in_fork(args: tuple[Job, str]) -> dict:
    """Render a job in a fork of this (pristine) worker and return its manifest row.

    eSpeak NG keeps internal synthesis state from one utterance to the next (its output for a text
    depends on what it said before), so each utterance is made by a child forked from a worker in a
    fixed state (:func:`_prepare_worker`). That makes every file independent of the order and the
    worker it was made in, so the same seed gives identical files. Call it in a fresh process
    (the synthesis pool), never in one that has used eSpeak for anything else.
    """
    _prepare_worker()  # before forking, so children start from the same state
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: make the file, send the row (or the error), exit without running parent cleanup
        os.close(read_fd)
        status = 1
        try:
            try:
                message = {"row": _render_to_file(*args)}
            except Exception as error:  # noqa: BLE001 - sent to the parent, which raises it
                message = {"error": f"{type(error).__name__}: {error}", "errno": getattr(error, "errno", None)}
            with os.fdopen(write_fd, "wb") as pipe:
                pipe.write(json.dumps(message).encode())
            status = 0 if "row" in message else 1
        finally:
            os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        payload = pipe.read()
    os.waitpid(pid, 0)
    message = json.loads(payload) if payload else {"error": "the process died without a word", "errno": None}
    if "row" in message:
        return message["row"]
    job, root = args
    if message["errno"] is not None:  # a failed write (a full disk, ...): name the file and what to do
        error = write_error(Path(root) / _wav_name(job), OSError(message["errno"], message["error"]))
        if error is not None:
            raise error
    raise RuntimeError(f"synthesising {job.id} ({job.text!r}) failed in a child process: {message['error']}")


def _wav_name(job: Job) -> str:
    return f"wavs/{job.speaker.id}/{job.id}.wav"


def _render_to_file(job: Job, root: str) -> dict:
    """Render a job, write its wav atomically, return its manifest row."""
    audio, phones, words = render(job)
    rel = _wav_name(job)
    with atomic_path(Path(root) / rel, fsync=False) as tmp:  # checksummed, and logged only once renamed
        sf.write(tmp, audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return {
        "index": job.index,
        "id": job.id,
        "kind": job.kind,
        "split": job.split,
        "wav_path": rel,
        "duration": round(len(audio) / SAMPLE_RATE, 4),
        "speaker": job.speaker.id,
        "text": job.text,
        "phones": " ".join(p for p, _, _ in phones),
        "intent": " ; ".join(job.intent) if job.intent else "",
        "word_alignment": format_alignment(words),
        "phone_alignment": format_alignment(phones),
        "sha256": sha256_file(Path(root) / rel),
    }
