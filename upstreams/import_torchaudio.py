"""Import torchaudio wav2vec 2.0 / HuBERT / WavLM models and bundles, and DPHuBERT checkpoints.

DPHuBERT (github pyf98/DPHuBERT) builds on torchaudio's components, so its ``{state_dict, config}``
files use torchaudio's parameter names and ``wav2vec2_model`` keyword arguments, extended with
per-layer lists for the pruned sizes. In the official code WavLM's relative position table belongs to
layer 0's attention; a DPHuBERT WavLM whose layer-0 attention was pruned entirely has no table and
runs without a position bias in every layer, and so does the model it is imported as
(``relative_position_heads=0``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from upstreams.config import EncoderConfig
from upstreams.convert import WEIGHT_NORM, Rename, build_encoder, rename_keys
from upstreams.model import SpeechEncoder

logger = logging.getLogger(__name__)

_TORCHAUDIO_RULES: list[Rename] = [
    (r"^feature_extractor\.conv_layers\.(\d+)\.conv\.", r"feature_extractor.conv_layers.\1.conv."),
    (r"^feature_extractor\.conv_layers\.(\d+)\.layer_norm\.", r"feature_extractor.conv_layers.\1.norm."),
    (r"^feature_extractor\.dummy_weight$", "feature_extractor.output_scale"),
    (r"^encoder\.feature_projection\.", "feature_projection."),
    *[
        (r"^encoder\.transformer\.pos_conv_embed\.conv\." + p, "transformer.pos_conv." + r)
        for p, r in WEIGHT_NORM
    ],
    (r"^encoder\.transformer\.layer_norm\.", "transformer.layer_norm."),
    (
        r"^encoder\.transformer\.layers\.\d+\.attention\.rel_attn_embed\.weight$",
        "transformer.relative_position.embedding.weight",
    ),
    (
        r"^encoder\.transformer\.layers\.(\d+)\.attention\.attention\.out_proj\.",
        r"transformer.layers.\1.attention.out_proj.",
    ),
    (r"^encoder\.transformer\.layers\.(\d+)\.", r"transformer.layers.\1."),
]


def _split_in_proj(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """torchaudio's WavLM packs q, k, v into one ``in_proj`` of ``nn.MultiheadAttention``."""
    for key in [
        k
        for k in state
        if k.endswith(".attention.attention.in_proj_weight")
        or k.endswith(".attention.attention.in_proj_bias")
    ]:
        base, kind = key.rsplit(".attention.in_proj_", 1)
        for name, chunk in zip(("q_proj", "k_proj", "v_proj"), state.pop(key).chunk(3, dim=0), strict=True):
            state[f"{base}.{name}.{kind}"] = chunk
    return state


def _as_list(value: Any, count: int) -> list:
    return list(value) if isinstance(value, list | tuple) else [value] * count


def convert_torchaudio(
    params: Mapping[str, Any], state: Mapping[str, Tensor], family: str, source: str = "torchaudio model"
):
    """torchaudio ``wav2vec2_model`` / ``wavlm_model`` kwargs (or DPHuBERT's config) + state dict -> ours.

    DPHuBERT's config adds per-layer lists (``encoder_num_heads``, ``encoder_ff_interm_features``,
    ``encoder_use_attention``, ``encoder_use_feed_forward``; for WavLM ``encoder_total_num_heads``
    and ``encoder_remaining_heads``) and ``normalize_waveform``.
    """
    state = dict(state)
    if any("hard_concrete" in key for key in state):
        raise ValueError(
            f"{source} still holds HardConcrete gates (it is a DPHuBERT training checkpoint); "
            "prune it first (DPHuBERT's prune.py) or import the final pruned checkpoint"
        )
    layers = params["encoder_num_layers"]
    dim = params["encoder_embed_dim"]
    conv_layers = (
        params.get("extractor_conv_layer_config") or [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
    )
    use_attention = _as_list(params.get("encoder_use_attention", True), layers)
    use_ffn = _as_list(params.get("encoder_use_feed_forward", True), layers)
    if family == "wavlm":
        total = _as_list(params.get("encoder_total_num_heads", params.get("encoder_num_heads")), layers)
        head_ids = params.get("encoder_remaining_heads") or [list(range(n)) for n in total]
        head_dim = dim // total[0]
        state = _split_in_proj(state)
        for layer, ids in enumerate(head_ids):  # DPHuBERT keeps the gate constant of every original head
            key = f"encoder.transformer.layers.{layer}.attention.gru_rel_pos_const"
            if key in state and state[key].numel() == total[layer] != len(ids):
                state[key] = state[key].reshape(-1)[list(ids)]
    else:
        counts = _as_list(params["encoder_num_heads"], layers)
        head_dim = params.get("encoder_head_dim") or dim // counts[0]
        head_ids = [list(range(n)) for n in counts]
    head_ids = [list(ids) if used else [] for ids, used in zip(head_ids, use_attention, strict=True)]
    ffn_dims = [
        d if used else 0
        for d, used in zip(_as_list(params["encoder_ff_interm_features"], layers), use_ffn, strict=True)
    ]
    config = EncoderConfig(
        family=family,
        conv_channels=[c for c, _, _ in conv_layers],
        conv_kernels=[k for _, k, _ in conv_layers],
        conv_strides=[s for _, _, s in conv_layers],
        conv_bias=bool(params.get("extractor_conv_bias", False)),
        extractor_norm={"group_norm": "group", "layer_norm": "layer"}[
            params.get("extractor_mode", "group_norm")
        ],
        extractor_output_scale="feature_extractor.dummy_weight" in state,
        normalize_waveform=bool(params.get("normalize_waveform", False)),
        embed_dim=dim,
        head_dim=head_dim,
        attention_heads=head_ids,
        use_attention=[bool(u) for u in use_attention],
        ffn_dims=ffn_dims,
        use_ffn=[bool(u) for u in use_ffn],
        layer_norm_first=bool(params.get("encoder_layer_norm_first", False)),
        pos_conv_kernel=params.get("encoder_pos_conv_kernel", 128),
        pos_conv_groups=params.get("encoder_pos_conv_groups", 16),
        num_buckets=params.get("encoder_num_buckets", 320),
        max_distance=params.get("encoder_max_distance", 800),
        relative_position_heads=total[0] if family == "wavlm" and _has_position_table(state) else 0,
        mask_embedding=False,
        dropout=params.get("encoder_dropout", 0.1),
        attention_dropout=params.get("encoder_attention_dropout", 0.1),
        activation_dropout=params.get("encoder_ff_interm_dropout", 0.0),
        projection_dropout=params.get("encoder_projection_dropout", 0.1),
        layer_drop=params.get("encoder_layer_drop", 0.0),
    )
    if family == "wavlm" and not _has_position_table(state):
        if head_ids[0]:
            raise ValueError(f"{source}: WavLM checkpoint without a relative position table (rel_attn_embed)")
        # DPHuBERT pruned layer 0's attention, which holds the table, entirely: its code then computes
        # no position bias at all, and neither does the model built here
        logger.info("%s: layer 0's attention was pruned away with WavLM's position table; no position bias", source)
    return config, rename_keys(state, _TORCHAUDIO_RULES, r"^(aux\.|normalize)", source)


def _has_position_table(state: Mapping[str, Tensor]) -> bool:
    return any(key.endswith("rel_attn_embed.weight") for key in state)


def _torchaudio_family(model_or_name: str) -> str:
    upper = model_or_name.upper()
    return "wavlm" if "WAVLM" in upper else ("hubert" if "HUBERT" in upper else "wav2vec2")


def from_torchaudio_model(model, family: str, normalize_waveform: bool = False) -> SpeechEncoder:
    """Convert a ``torchaudio.models.Wav2Vec2Model`` (e.g. ``torchaudio.models.hubert_base()``).

    ``family`` must be given: HuBERT and wav2vec 2.0 models have the same structure.
    """
    from torch import nn

    model = getattr(model, "model", model)  # bundles may wrap the model to normalise waveforms
    blocks = model.feature_extractor.conv_layers
    layers = model.encoder.transformer.layers
    first = layers[0]
    params = {
        "extractor_mode": "layer_norm" if isinstance(blocks[-1].layer_norm, nn.LayerNorm) else "group_norm",
        "extractor_conv_layer_config": [(b.conv.out_channels, b.kernel_size, b.stride) for b in blocks],
        "extractor_conv_bias": blocks[0].conv.bias is not None,
        "encoder_embed_dim": model.encoder.feature_projection.projection.out_features,
        "encoder_pos_conv_kernel": model.encoder.transformer.pos_conv_embed.kernel_size,
        "encoder_pos_conv_groups": model.encoder.transformer.pos_conv_embed.conv.groups,
        "encoder_num_layers": len(layers),
        "encoder_num_heads": first.attention.num_heads,
        "encoder_ff_interm_features": first.feed_forward.intermediate_dense.out_features,
        "encoder_layer_norm_first": first.layer_norm_first,
        "encoder_num_buckets": getattr(first.attention, "num_buckets", 320),
        "encoder_max_distance": getattr(first.attention, "max_distance", 800),
        "normalize_waveform": normalize_waveform,
    }
    config, state = convert_torchaudio(params, model.state_dict(), family, type(model).__name__)
    return build_encoder(config, state, type(model).__name__)


def from_torchaudio_bundle(name: str) -> SpeechEncoder:
    """Download (once, into torch.hub's cache) and convert ``torchaudio.pipelines.<name>``."""
    import torchaudio

    bundle = getattr(torchaudio.pipelines, name, None)
    if bundle is None or not hasattr(bundle, "_params"):
        raise ValueError(f"torchaudio.pipelines has no wav2vec 2.0 / HuBERT / WavLM bundle named {name!r}")
    url = f"https://download.pytorch.org/torchaudio/models/{bundle._path}"
    state = torch.hub.load_state_dict_from_url(url, map_location="cpu", weights_only=True)
    params = {**bundle._params, "normalize_waveform": bool(getattr(bundle, "_normalize_waveform", False))}
    config, state = convert_torchaudio(params, state, _torchaudio_family(name), f"torchaudio:{name}")
    return build_encoder(config, state, f"torchaudio:{name}")
