"""MACs as the SUPERB challenge (SLT 2022) counts them: summed over 32 LibriSpeech test-clean utterances.

The challenge sorts test-clean's utterances by length and takes the ``(82 i + 1)``-th for
``i = 0 .. 31`` (1.28 s to 20.38 s), runs the upstream on each alone and sums the MACs
(FLOPs / 2; HuBERT Base: 1669 G). This harness counts with ``torch.utils.flop_counter``, as its
MACs per second of audio are counted (:mod:`upstreams.cost`): convolutions, linear layers and
attention; norms and the front end's FFT are not counted, as in the challenge's profiler.

:func:`evaluate <harness.evaluation.engine.setup>` adds the figure to every record of a LibriSpeech corpus
whose test split is test-clean (``upstream.macs_superb_g``), beside MACs per second of audio.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from tasks.audio import load_audio
from tasks.corpora.manifest import CorpusInfo, read_manifest

logger = logging.getLogger(__name__)

COUNT = 32  # utterances
STRIDE = 82  # every 82nd of test-clean's 2620, by length
TEST_SUBSET = "test-clean"


def challenge_selection(
    ids: Sequence[str], durations: Sequence[float], count: int | None = None, stride: int | None = None
) -> list[int]:
    """Indices of the challenge's utterances: sorted by (duration, id), the ``stride * i``-th (0-based)
    for ``i < count`` (defaults :data:`COUNT`, :data:`STRIDE`)."""
    count, stride = count or COUNT, stride or STRIDE
    need = stride * (count - 1) + 1
    if len(ids) < need:
        raise ValueError(
            f"the SUPERB MACs protocol takes 1 in {stride} of {need}+ utterances sorted by length; the set has {len(ids)}"
        )
    order = sorted(range(len(ids)), key=lambda i: (durations[i], ids[i]))
    return [order[stride * i] for i in range(count)]


def applies(corpus: str) -> bool:
    """Whether ``corpus`` is LibriSpeech prepared with test-clean as its test split."""
    info = CorpusInfo.read(corpus)
    return info.name == "librispeech" and info.params.get("splits", {}).get("test") == [TEST_SUBSET]


@torch.no_grad()
def challenge_macs(upstream: torch.nn.Module, corpus: str, count: int | None = None, stride: int | None = None) -> dict:
    """MACs of ``upstream`` (``forward(wavs [1, T], lens [1])``) summed over the challenge's utterances."""
    from torch.utils.flop_counter import FlopCounterMode

    from upstreams.cost import _attention_flops

    frame = read_manifest(corpus, "asr", "test")
    chosen = challenge_selection(list(frame["id"]), list(frame["duration"].astype(float)), count, stride)
    device = next((p.device for p in upstream.parameters()), torch.device("cpu"))
    custom = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _attention_flops}
    was_training = upstream.training
    upstream.eval()
    total = 0
    try:
        for index in chosen:
            wav = load_audio(frame["wav_path"].iloc[index]).to(device)[None]
            with FlopCounterMode(display=False, custom_mapping=custom) as counter:
                upstream(wav, torch.tensor([wav.shape[1]], device=device))
            total += counter.get_total_flops() // 2
    finally:
        upstream.train(was_training)
    seconds = [float(frame["duration"].iloc[i]) for i in chosen]
    logger.info("SUPERB MACs: %.1f G over %d test-clean utterances (%.2f-%.2f s)", total / 1e9, len(chosen), min(seconds), max(seconds))
    return {"macs_superb_g": total / 1e9, "macs_superb_utterances": [str(frame["id"].iloc[i]) for i in chosen]}
