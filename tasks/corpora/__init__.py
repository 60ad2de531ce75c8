"""Corpora in one layout (see :mod:`tasks.corpora.manifest`): the embedded SynthSpeech corpus and
preparers for real corpora in their standard directory layouts.

``PREPARERS`` maps a corpus name to ``prepare(root, out, **options) -> Path``; entries are imported
on first use.
"""

from core.registry import Registry

PREPARERS: Registry = Registry("corpus")
PREPARERS.register("librispeech", "tasks.corpora.librispeech:prepare_librispeech")
PREPARERS.register("voxceleb1", "tasks.corpora.voxceleb1:prepare_voxceleb1")
PREPARERS.register("fluent_commands", "tasks.corpora.fluent_commands:prepare_fluent_commands")
PREPARERS.register("speech_commands", "tasks.corpora.speech_commands:prepare_speech_commands")
