"""SynthSpeech sizes (``harness corpus synth --size``), torch- and scipy-free so that the command's
choices come from here without loading the synthesiser."""

from __future__ import annotations

from dataclasses import dataclass

#: What ``harness corpus synth`` and ``--corpus synth`` make when no size is given.
DEFAULT_SIZE = "tiny"


@dataclass(frozen=True)
class SynthPreset:
    """How much SynthSpeech to make. ``micro`` exists for fast tests only."""

    speakers: int
    sentences_per_speaker: int
    commands_per_speaker: int
    words_per_speaker: int
    sentence_pool: int  # distinct sentence texts, split 80/10/10


PRESETS = {
    "micro": SynthPreset(speakers=8, sentences_per_speaker=10, commands_per_speaker=8, words_per_speaker=6, sentence_pool=60),
    "tiny": SynthPreset(speakers=24, sentences_per_speaker=20, commands_per_speaker=16, words_per_speaker=20, sentence_pool=400),
    "small": SynthPreset(speakers=48, sentences_per_speaker=60, commands_per_speaker=32, words_per_speaker=30, sentence_pool=2400),
    "full": SynthPreset(speakers=96, sentences_per_speaker=150, commands_per_speaker=60, words_per_speaker=30, sentence_pool=12000),
}

#: Every size by name.
SIZES = PRESETS
