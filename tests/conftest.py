"""Shared fixtures: a small SynthSpeech corpus, generated once per test session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def synth_corpus(tmp_path_factory):
    """Root of a SynthSpeech ``micro`` corpus (8 speakers, about 7 minutes of audio), seed 0."""
    from tasks.corpora.synth import synthesize_corpus

    return synthesize_corpus(tmp_path_factory.mktemp("synth") / "micro", preset="micro", seed=0)
