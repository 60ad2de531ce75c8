"""Shared pieces of the checkpoint converters: key renaming and building the encoder from a state dict."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

from torch import Tensor

from upstreams.config import EncoderConfig
from upstreams.model import SpeechEncoder

logger = logging.getLogger(__name__)

Rename = tuple[str, str]
WEIGHT_NORM = [  # the positional conv's weight norm, old (weight_g/v) and new (parametrizations) names
    (r"(weight_g|parametrizations\.weight\.original0)$", "weight_g"),
    (r"(weight_v|parametrizations\.weight\.original1)$", "weight_v"),
    (r"bias$", "bias"),
]


def check_family(family: str | None, wavlm: bool, source: str) -> str | None:
    """``family`` unless it contradicts what the file holds (WavLM or not), which raises ``ValueError``
    naming the entry to use; HuBERT and wav2vec 2.0 files cannot be told apart, so either is taken."""
    if family is None or (family == "wavlm") == wavlm:
        return family
    held, use = ("WavLM", "pruned_wavlm (family 'wavlm')") if wavlm else (
        "HuBERT / wav2vec 2.0", "pruned_hubert or pruned_wav2vec2 (family 'hubert' or 'wav2vec2')")
    raise ValueError(f"{source} holds a {held} model, not {family}: load it with {use}")


def rename_keys(
    state: Mapping[str, Tensor], rules: list[Rename], ignore: str, source: str
) -> dict[str, Tensor]:
    """Apply the first matching ``(pattern, replacement)`` rule to each key; drop keys matching ``ignore``."""
    renamed, dropped = {}, []
    for key, tensor in state.items():
        for pattern, replacement in rules:
            if re.match(pattern, key):
                renamed[re.sub(pattern, replacement, key)] = tensor
                break
        else:
            if not re.match(ignore, key):
                raise ValueError(
                    f"{source}: unexpected weight {key!r}; this checkpoint layout is not supported"
                )
            dropped.append(key)
    if dropped:
        logger.info(
            "%s: ignoring %d weights the encoder does not use (e.g. %s)", source, len(dropped), dropped[0]
        )
    return renamed


def build_encoder(config: EncoderConfig, state: Mapping[str, Tensor], source: str) -> SpeechEncoder:
    """A :class:`SpeechEncoder` for ``config`` holding ``state`` (our key layout); errors name ``source``."""
    model = SpeechEncoder(config, initialize=False)
    expected = model.state_dict()
    state = dict(state)
    for key in list(state):
        if key not in expected:
            # pre-LN layers without a block have no LayerNorm in front of it (DPHuBERT keeps it unused)
            if config.layer_norm_first and re.match(r"transformer\.layers\.\d+\.(final_)?layer_norm\.", key):
                del state[key]
            continue
        # e.g. WavLM's gate constant, stored as [1, heads, 1, 1] elsewhere and as [heads] here
        if state[key].shape != expected[key].shape and state[key].numel() == expected[key].numel():
            state[key] = state[key].reshape(expected[key].shape)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{source}: the weights do not fit the architecture read from its config "
            f"(missing {missing[:6]}, unexpected {unexpected[:6]})"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"{source}: weight shapes do not match its config: {error}") from None
    return model.eval()
