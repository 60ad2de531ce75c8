"""SynthSpeech sizes (``harness corpus synth --size``), torch- and scipy-free so that the command's
choices come from here without loading the synthesiser."""

from __future__ import annotations

from dataclasses import dataclass

#: What ``harness corpus synth`` and ``--corpus synth`` make when no size is given.
DEFAULT_SIZE = "tiny"


@dataclass(frozen=True)
class SynthPreset:
    """How much SynthSpeech to make. ``micro`` exists for fast tests only.

    Sentences and commands per speaker are split 80/10/10 into train/valid/test, unless the test
    split is given its own size (``test_*_per_speaker``), which then comes on top of train and
    valid. ``tiny`` has large test splits so that the teacher's 95 % intervals are at most about 2
    points wide on each side (a binomial proportion near 50 % needs about 2400 test utterances for
    that; a WER over about 1000 sentences). Its train and valid splits (48 + 6 sentences and 64 + 8
    commands per speaker: 1152 / 144 sentences, 1536 / 192 commands) are three to five times those
    of the first ``tiny`` (16 + 2 and 12 + 2): with 384 training sentences and 48 validation
    utterances to pick the step on, the heads' seed and the CPU's float noise moved a figure by up
    to 13 points; pooled heads and cached frames keep the larger splits cheap.
    """

    speakers: int
    sentences_per_speaker: int
    commands_per_speaker: int
    words_per_speaker: int
    sentence_pool: int  # distinct sentence texts, split 80/10/10
    test_sentences_per_speaker: int | None = None
    test_commands_per_speaker: int | None = None

    def params(self) -> dict:
        """The preset's fields as recorded in ``corpus.json``: unset test sizes are left out, so
        presets without them keep the parameters (and the corpus) they always had."""
        fields = dict(vars(self))
        return {k: v for k, v in fields.items() if not (k.startswith("test_") and v is None)}


PRESETS = {
    "micro": SynthPreset(speakers=8, sentences_per_speaker=10, commands_per_speaker=8, words_per_speaker=6, sentence_pool=60),
    "tiny": SynthPreset(
        speakers=24, sentences_per_speaker=60, commands_per_speaker=80, words_per_speaker=20, sentence_pool=2400,
        test_sentences_per_speaker=50, test_commands_per_speaker=120,
    ),
    "small": SynthPreset(speakers=48, sentences_per_speaker=60, commands_per_speaker=32, words_per_speaker=30, sentence_pool=2400),
    "full": SynthPreset(speakers=96, sentences_per_speaker=150, commands_per_speaker=60, words_per_speaker=30, sentence_pool=12000),
}

#: Every size by name.
SIZES = PRESETS
