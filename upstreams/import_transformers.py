"""Import Hugging Face ``transformers`` HubertModel / WavLMModel / Wav2Vec2Model weights (or their task models).

Reads ``config.json`` and the safetensors (or weights-only ``pytorch_model.bin``) directly: no
transformers model is instantiated. A hub name is downloaded only when the user names one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from upstreams.config import BASE_CONV_KERNELS, BASE_CONV_STRIDES, EncoderConfig
from upstreams.convert import WEIGHT_NORM, Rename, build_encoder, rename_keys
from upstreams.model import SpeechEncoder
from upstreams.safe_load import safe_torch_load

logger = logging.getLogger(__name__)

_HF_FAMILIES = {"hubert": "hubert", "wav2vec2": "wav2vec2", "wavlm": "wavlm"}
_HF_RULES: list[Rename] = [
    (r"^feature_extractor\.conv_layers\.(\d+)\.conv\.", r"feature_extractor.conv_layers.\1.conv."),
    (r"^feature_extractor\.conv_layers\.(\d+)\.layer_norm\.", r"feature_extractor.conv_layers.\1.norm."),
    (r"^feature_projection\.(layer_norm|projection)\.", r"feature_projection.\1."),
    (r"^masked_spec_embed$", "mask_embedding"),
    *[(r"^encoder\.pos_conv_embed\.conv\." + p, "transformer.pos_conv." + r) for p, r in WEIGHT_NORM],
    (r"^encoder\.layer_norm\.", "transformer.layer_norm."),
    (
        r"^encoder\.layers\.0\.attention\.rel_attn_embed\.weight$",
        "transformer.relative_position.embedding.weight",
    ),
    (r"^encoder\.layers\.(\d+)\.", r"transformer.layers.\1."),
]


def convert_transformers(
    hf_config: Mapping[str, Any], state: Mapping[str, Tensor], source: str = "transformers model"
):
    """(``config.json`` dict, state dict) of a transformers model -> (EncoderConfig, our state dict)."""
    model_type = hf_config.get("model_type")
    if model_type not in _HF_FAMILIES:
        raise ValueError(
            f"{source}: model_type {model_type!r} is not supported; expected one of {sorted(_HF_FAMILIES)}"
        )
    for key in ("hidden_act", "feat_extract_activation"):
        if hf_config.get(key, "gelu") != "gelu":
            raise ValueError(f"{source}: {key}={hf_config[key]!r} is not supported (only 'gelu')")
    if hf_config.get("conv_pos_batch_norm", False) or hf_config.get("num_conv_pos_embedding_layers", 1) != 1:
        raise ValueError(f"{source}: only the single weight-normalised positional convolution is supported")
    anchor = next((k for k in state if k.endswith("feature_extractor.conv_layers.0.conv.weight")), None)
    if anchor is None:
        raise ValueError(f"{source}: no feature_extractor.conv_layers.0.conv.weight in the weights")
    prefix = anchor[: -len("feature_extractor.conv_layers.0.conv.weight")]
    state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    layers = hf_config.get("num_hidden_layers", 12)
    heads = hf_config.get("num_attention_heads", 12)
    dim = hf_config.get("hidden_size", 768)
    family = _HF_FAMILIES[model_type]
    config = EncoderConfig(
        family=family,
        conv_channels=list(hf_config.get("conv_dim", [512] * 7)),
        conv_kernels=list(hf_config.get("conv_kernel", BASE_CONV_KERNELS)),
        conv_strides=list(hf_config.get("conv_stride", BASE_CONV_STRIDES)),
        conv_bias=bool(hf_config.get("conv_bias", False)),
        extractor_norm=hf_config.get("feat_extract_norm", "group"),
        projection_layer_norm=bool(hf_config.get("feat_proj_layer_norm", True)),
        embed_dim=dim,
        head_dim=dim // heads,
        attention_heads=[list(range(heads)) for _ in range(layers)],
        use_attention=[True] * layers,
        ffn_dims=[hf_config.get("intermediate_size", 3072)] * layers,
        use_ffn=[True] * layers,
        layer_norm_first=bool(hf_config.get("do_stable_layer_norm", False)),
        pos_conv_kernel=hf_config.get("num_conv_pos_embeddings", 128),
        pos_conv_groups=hf_config.get("num_conv_pos_embedding_groups", 16),
        num_buckets=hf_config.get("num_buckets", 320),
        max_distance=hf_config.get("max_bucket_distance", 800),
        relative_position_heads=heads if family == "wavlm" else 0,
        mask_embedding="masked_spec_embed" in state,
        layer_norm_eps=hf_config.get("layer_norm_eps", 1e-5),
        dropout=hf_config.get("hidden_dropout", 0.1),
        attention_dropout=hf_config.get("attention_dropout", 0.1),
        activation_dropout=hf_config.get("activation_dropout", 0.0),
        projection_dropout=hf_config.get("feat_proj_dropout", 0.0),
        layer_drop=hf_config.get("layerdrop", 0.0),
    )
    return config, rename_keys(state, _HF_RULES, r"^(adapter|quantizer|project_|masked_spec)", source)


def _read_transformers_weights(directory: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    index = directory / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        state: dict[str, Tensor] = {}
        for name in files:
            state.update(load_file(str(directory / name)))
        return state
    if (directory / "model.safetensors").is_file():
        return load_file(str(directory / "model.safetensors"))
    if (directory / "pytorch_model.bin").is_file():
        return safe_torch_load(directory / "pytorch_model.bin")
    raise FileNotFoundError(f"{directory} has no model.safetensors or pytorch_model.bin")


def from_transformers(path_or_name: str | Path, revision: str | None = None) -> SpeechEncoder:
    """Import a transformers model directory, or download a hub model by name (only then)."""
    directory = Path(path_or_name).expanduser()
    if not directory.is_dir():
        from huggingface_hub import snapshot_download

        logger.info("downloading %s from the Hugging Face hub", path_or_name)
        try:
            directory = Path(
                snapshot_download(
                    str(path_or_name),
                    revision=revision,
                    allow_patterns=["*.json", "*.safetensors", "pytorch_model.bin"],
                )
            )
        except Exception as error:  # offline, unknown repository, no permission, ...
            raise FileNotFoundError(
                f"{path_or_name} is not a local directory, and fetching it from the Hugging Face hub "
                f"failed ({type(error).__name__}: {error})"
            ) from error
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{directory} has no config.json: not a transformers model directory")
    try:
        hf_config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_path} is not valid JSON ({error}); the checkpoint is damaged") from None
    config, state = convert_transformers(hf_config, _read_transformers_weights(directory), str(directory))
    preprocessor = directory / "preprocessor_config.json"
    if preprocessor.is_file():  # Large models expect standardised waveforms (feature extractor do_normalize)
        do_normalize = json.loads(preprocessor.read_text(encoding="utf-8")).get("do_normalize", False)
        config = config.replace(normalize_waveform=bool(do_normalize))
    return build_encoder(config, state, str(directory))


def from_transformers_model(model) -> SpeechEncoder:
    """Convert an in-memory transformers model (``HubertModel``, ``WavLMModel``, ...)."""
    config, state = convert_transformers(model.config.to_dict(), model.state_dict(), type(model).__name__)
    return build_encoder(config, state, type(model).__name__)
