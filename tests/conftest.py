"""Shared fixtures: a small SynthSpeech corpus, generated once per test session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def synth_corpus(tmp_path_factory):
    """Root of a SynthSpeech ``micro`` corpus (8 speakers, about 7 minutes of audio), seed 0."""
    from tasks.corpora.synth import synthesize_corpus

    return synthesize_corpus(tmp_path_factory.mktemp("synth") / "micro", preset="micro", seed=0)


@pytest.fixture
def one_torch_thread():
    """One intra-op thread: on a shared 2-core machine, two threads wait on each other for tiny ops."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
