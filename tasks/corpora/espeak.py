"""A small ctypes binding to eSpeak NG (shipped on PyPI by espeakng-loader): synthesis with
phone/word timings from the synthesizer's own events, and text-to-phoneme conversion.

The library keeps global state, so there is one :class:`Espeak` per process (:func:`get_espeak`).
Phones are IPA with stress marks removed (``ˈɜː`` -> ``ɜː``); length marks are kept.

eSpeak groups an unstressed function word with its neighbour ("on the") into one phonological
word; such a group gets one word segment labelled with all its words ("on the").
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass

import espeakng_loader
import numpy as np

_SYNCHRONOUS = 2
_PHONEME_EVENTS = 0x0001
_PHONEME_IPA = 0x0002
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_EVENT_LIST_TERMINATED, _EVENT_END, _EVENT_PHONEME = 0, 5, 7
_PARAM = {"rate": 1, "volume": 2, "pitch": 3, "range": 4, "wordgap": 7}
_STRESS_MARKS = str.maketrans("", "", "ˈˌ'")


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass(frozen=True)
class VoiceSettings:
    """What eSpeak is asked to sound like; a SynthSpeech speaker is one of these plus a channel."""

    voice: str = "en-us"  # language voice, optionally "+variant" (e.g. "en-us+m3")
    rate: int = 175  # words per minute, 80..450
    pitch: int = 50  # base pitch, 0..100
    pitch_range: int = 50  # intonation range, 0..100
    word_gap: int = 0  # extra pause between words, units of 10 ms


@dataclass
class Synthesis:
    """One synthesized utterance at the synthesizer's native rate.

    Attributes:
        audio: ``[time]`` float32 waveform in [-1, 1].
        sample_rate: the synthesizer's rate (22050 Hz).
        phones: ``(phone, start_s, end_s)`` for each phone, in order.
        words: ``(word, start_s, end_s)`` for each phonological word, in order.
    """

    audio: np.ndarray
    sample_rate: int
    phones: list[tuple[str, float, float]]
    words: list[tuple[str, float, float]]


class Espeak:
    """The eSpeak NG library, initialised in synchronous mode with IPA phoneme events."""

    def __init__(self) -> None:
        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._lib.espeak_Initialize.restype = ctypes.c_int
        self._lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        data = espeakng_loader.get_data_path().encode()
        self.sample_rate = self._lib.espeak_Initialize(_SYNCHRONOUS, 0, data, _PHONEME_EVENTS | _PHONEME_IPA)
        if self.sample_rate <= 0:
            raise RuntimeError(f"eSpeak NG failed to initialise with data at {data.decode()}")
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, int, str]] = []
        self._callback = _SynthCallback(self._on_audio)  # keep a reference: ctypes does not
        self._lib.espeak_SetSynthCallback(self._callback)
        self._lock = threading.Lock()

    def _on_audio(self, wav, num_samples, events) -> int:
        if num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            event = events[i]
            name = bytes(event.id.string).split(b"\0")[0].decode("utf-8", "replace") if event.type == _EVENT_PHONEME else ""
            self._events.append((event.type, event.text_position, event.audio_position, name))
            i += 1
        return 0

    def _set_voice(self, settings: VoiceSettings) -> None:
        if self._lib.espeak_SetVoiceByName(settings.voice.encode()) != 0:
            raise ValueError(f"eSpeak NG has no voice {settings.voice!r}")
        for key, value in (
            ("rate", settings.rate),
            ("pitch", settings.pitch),
            ("range", settings.pitch_range),
            ("wordgap", settings.word_gap),
        ):
            self._lib.espeak_SetParameter(_PARAM[key], int(value), 0)

    def synthesize(self, text: str, settings: VoiceSettings) -> Synthesis:
        """Speak ``text`` (words separated by single spaces) and return audio with phone and word timings."""
        encoded = text.encode("utf-8")
        with self._lock:
            self._set_voice(settings)
            self._chunks, self._events = [], []
            self._lib.espeak_Synth(encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            self._lib.espeak_Synchronize()
            chunks, events = self._chunks, self._events
        audio = np.concatenate(chunks).astype(np.float32) / 32768.0 if chunks else np.zeros(0, np.float32)
        phones, words = _timings(text, events, len(audio) / self.sample_rate)
        return Synthesis(audio, self.sample_rate, phones, words)

    def phonemize(self, text: str, voice: str = "en-us") -> list[str]:
        """Translate text to a flat list of IPA phones (stress marks removed), as the synthesizer would say it."""
        with self._lock:
            self._set_voice(VoiceSettings(voice=voice))
            source = ctypes.c_char_p(text.encode("utf-8"))
            pointer = ctypes.pointer(source)
            phones: list[str] = []
            mode = _PHONEME_IPA | (ord(" ") << 8)  # IPA, phones separated by spaces
            while pointer.contents.value:
                out = self._lib.espeak_TextToPhonemes(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_void_p)), _CHARS_UTF8, mode)
                phones.extend(normalize_phone(p) for p in out.decode("utf-8").split())
        return [p for p in phones if p]


def normalize_phone(phone: str) -> str:
    """Strip stress marks from an eSpeak IPA phone; pauses (``_``, ``_:``) become empty."""
    phone = phone.translate(_STRESS_MARKS).strip()
    return "" if phone.startswith("_") else phone


def _timings(
    text: str, events: list[tuple[int, int, int, str]], total_s: float
) -> tuple[list[tuple[str, float, float]], list[tuple[str, float, float]]]:
    """Phone and word segments from phoneme events: a phone lasts until the next event.

    Phoneme events carry the 1-based character position of the (phonological) word they belong to.
    """
    marks = [(pos, ms / 1000.0, normalize_phone(name)) for kind, pos, ms, name in events if kind == _EVENT_PHONEME]
    ends = [start for _, start, _ in marks[1:]]
    end_events = [ms / 1000.0 for kind, _, ms, _ in events if kind == _EVENT_END]
    ends.append(end_events[-1] if end_events else total_s)
    phones, groups = [], {}
    for (pos, start, phone), end in zip(marks, ends, strict=True):
        if not phone:
            continue
        phones.append((phone, start, end))
        groups.setdefault(pos, []).append((start, end))
    word_starts = _word_starts(text)
    words = []
    positions = sorted(groups)
    for i, pos in enumerate(positions):
        next_pos = positions[i + 1] if i + 1 < len(positions) else len(text) + 1
        label = " ".join(w for p, w in word_starts if pos <= p < next_pos)
        words.append((label, groups[pos][0][0], groups[pos][-1][1]))
    return phones, words


def _word_starts(text: str) -> list[tuple[int, str]]:
    """1-based character position of each space-separated word."""
    starts, position = [], 1
    for word in text.split(" "):
        if word:
            starts.append((position, word))
        position += len(word) + 1
    return starts


_INSTANCE: Espeak | None = None


def get_espeak() -> Espeak:
    """The process-wide :class:`Espeak` (the library holds global state)."""
    global _INSTANCE
    if _INSTANCE is None:
        _INSTANCE = Espeak()
    return _INSTANCE


def phonemize(text: str, voice: str = "en-us") -> list[str]:
    """Flat IPA phone list for ``text`` (see :meth:`Espeak.phonemize`)."""
    return get_espeak().phonemize(text, voice)
