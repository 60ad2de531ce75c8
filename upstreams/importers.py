"""Import HuBERT / WavLM / wav2vec 2.0 checkpoints into :class:`~upstreams.model.SpeechEncoder`.

Supported sources (:func:`load_upstream` picks one from its argument):

- a compact checkpoint directory (``config.json`` + ``model.safetensors``, see ``upstreams.checkpoint``);
- a Hugging Face ``transformers`` model directory (HubertModel, WavLMModel, Wav2Vec2Model or one of
  their task models), or a hub name such as ``facebook/hubert-base-ls960`` (downloaded only then);
- ``torchaudio:HUBERT_BASE`` (any ``torchaudio.pipelines`` wav2vec 2.0 / HuBERT / WavLM bundle);
- a fairseq checkpoint (``{"cfg"|"args", "model"}``), an original WavLM checkpoint, or an s3prl
  converted one (``{"model_cfg", "task_cfg", "model_weight"}``);
- a DPHuBERT checkpoint (``{"state_dict", "config"}`` with torchaudio-style config keys).

Every ``.pt`` / ``.pth`` / ``.bin`` file goes through :func:`upstreams.safe_load.safe_torch_load`.
Each converter is a pure function ``(config, state dict) -> (EncoderConfig, state dict)``;
weights that an encoder has no use for (CTC heads, quantizers, HuBERT label embeddings) are dropped
with a log line.
"""

from __future__ import annotations

import ast
import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from upstreams.config import BASE_CONV_KERNELS, BASE_CONV_STRIDES, EncoderConfig
from upstreams.model import SpeechEncoder
from upstreams.safe_load import safe_torch_load

logger = logging.getLogger(__name__)

Rename = tuple[str, str]
_FILE_SUFFIXES = {".pt", ".pth", ".ckpt", ".bin", ".safetensors", ".json"}
_WEIGHT_NORM = [  # the positional conv's weight norm, old (weight_g/v) and new (parametrizations) names
    (r"(weight_g|parametrizations\.weight\.original0)$", "weight_g"),
    (r"(weight_v|parametrizations\.weight\.original1)$", "weight_v"),
    (r"bias$", "bias"),
]


def _rename(state: Mapping[str, Tensor], rules: list[Rename], ignore: str, source: str) -> dict[str, Tensor]:
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
        if state[key].shape != expected[key].shape and state[key].numel() == expected[key].numel():
            state[key] = state[key].reshape(
                expected[key].shape
            )  # e.g. WavLM's [1, heads, 1, 1] gate constant
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


# ---------------------------------------------------------------------- transformers
_HF_FAMILIES = {"hubert": "hubert", "wav2vec2": "wav2vec2", "wavlm": "wavlm"}
_HF_RULES: list[Rename] = [
    (r"^feature_extractor\.conv_layers\.(\d+)\.conv\.", r"feature_extractor.conv_layers.\1.conv."),
    (r"^feature_extractor\.conv_layers\.(\d+)\.layer_norm\.", r"feature_extractor.conv_layers.\1.norm."),
    (r"^feature_projection\.(layer_norm|projection)\.", r"feature_projection.\1."),
    (r"^masked_spec_embed$", "mask_embedding"),
    *[(r"^encoder\.pos_conv_embed\.conv\." + p, "transformer.pos_conv." + r) for p, r in _WEIGHT_NORM],
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
    return config, _rename(state, _HF_RULES, r"^(adapter|quantizer|project_|masked_spec)", source)


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


# ---------------------------------------------------------------------- torchaudio and DPHuBERT
_TORCHAUDIO_RULES: list[Rename] = [
    (r"^feature_extractor\.conv_layers\.(\d+)\.conv\.", r"feature_extractor.conv_layers.\1.conv."),
    (r"^feature_extractor\.conv_layers\.(\d+)\.layer_norm\.", r"feature_extractor.conv_layers.\1.norm."),
    (r"^feature_extractor\.dummy_weight$", "feature_extractor.output_scale"),
    (r"^encoder\.feature_projection\.", "feature_projection."),
    *[
        (r"^encoder\.transformer\.pos_conv_embed\.conv\." + p, "transformer.pos_conv." + r)
        for p, r in _WEIGHT_NORM
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
        relative_position_heads=total[0] if family == "wavlm" else 0,
        mask_embedding=False,
        dropout=params.get("encoder_dropout", 0.1),
        attention_dropout=params.get("encoder_attention_dropout", 0.1),
        activation_dropout=params.get("encoder_ff_interm_dropout", 0.0),
        projection_dropout=params.get("encoder_projection_dropout", 0.1),
        layer_drop=params.get("encoder_layer_drop", 0.0),
    )
    if family == "wavlm" and not any(key.endswith("rel_attn_embed.weight") for key in state):
        raise ValueError(f"{source}: WavLM checkpoint without a relative position table (rel_attn_embed)")
    return config, _rename(state, _TORCHAUDIO_RULES, r"^(aux\.|normalize)", source)


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


# ---------------------------------------------------------------------- fairseq / WavLM / s3prl-converted
_FAIRSEQ_RULES: list[Rename] = [
    (r"^feature_extractor\.conv_layers\.(\d+)\.0\.", r"feature_extractor.conv_layers.\1.conv."),
    (r"^feature_extractor\.conv_layers\.(\d+)\.2\.(1\.)?", r"feature_extractor.conv_layers.\1.norm."),
    (r"^layer_norm\.", "feature_projection.layer_norm."),
    (r"^post_extract_proj\.", "feature_projection.projection."),
    (r"^mask_emb$", "mask_embedding"),
    *[(r"^encoder\.pos_conv\.0\." + p, "transformer.pos_conv." + r) for p, r in _WEIGHT_NORM],
    (r"^encoder\.layer_norm\.", "transformer.layer_norm."),
    (
        r"^encoder\.layers\.0\.self_attn\.relative_attention_bias\.weight$",
        "transformer.relative_position.embedding.weight",
    ),
    (
        r"^encoder\.layers\.(\d+)\.self_attn\.grep_linear\.",
        r"transformer.layers.\1.attention.gru_rel_pos_linear.",
    ),
    (r"^encoder\.layers\.(\d+)\.self_attn\.grep_a$", r"transformer.layers.\1.attention.gru_rel_pos_const"),
    (r"^encoder\.layers\.(\d+)\.self_attn\.(q|k|v|out)_proj\.", r"transformer.layers.\1.attention.\2_proj."),
    (r"^encoder\.layers\.(\d+)\.self_attn_layer_norm\.", r"transformer.layers.\1.layer_norm."),
    (r"^encoder\.layers\.(\d+)\.final_layer_norm\.", r"transformer.layers.\1.final_layer_norm."),
    (r"^encoder\.layers\.(\d+)\.fc1\.", r"transformer.layers.\1.feed_forward.intermediate_dense."),
    (r"^encoder\.layers\.(\d+)\.fc2\.", r"transformer.layers.\1.feed_forward.output_dense."),
]
_FAIRSEQ_IGNORED = r"^(label_embs_concat|final_proj|quantizer|project_q|target_glu|layer_norm_target|proj\.|w2v_encoder\.proj)"


def parse_conv_layers(spec: str | list) -> list[tuple[int, int, int]]:
    """Evaluate fairseq's ``conv_feature_layers`` string (list displays, ``+`` and ``*`` only; no ``eval``)."""
    if isinstance(spec, list | tuple):
        return [tuple(layer) for layer in spec]

    def evaluate(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.List | ast.Tuple):
            values = [evaluate(element) for element in node.elts]
            return values if isinstance(node, ast.List) else tuple(values)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mult):
            left, right = evaluate(node.left), evaluate(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise ValueError(f"unsupported conv_feature_layers expression {spec!r}")

    layers = evaluate(ast.parse(spec, mode="eval").body)
    return [tuple(layer) for layer in layers]


def _plain(value: Any) -> Any:
    """OmegaConf containers / Namespaces -> plain dicts."""
    if hasattr(value, "items") and not isinstance(value, dict):
        try:
            from omegaconf import OmegaConf

            return OmegaConf.to_container(value, resolve=True)
        except (ImportError, ValueError):
            return dict(value.items())
    if hasattr(value, "__dict__") and not isinstance(value, dict):
        return dict(vars(value))
    return value


def convert_fairseq(
    checkpoint: Mapping[str, Any], family: str | None = None, source: str = "fairseq checkpoint"
):
    """A fairseq / original WavLM / s3prl-converted checkpoint dict -> (EncoderConfig, our state dict)."""
    if "model_weight" in checkpoint:  # s3prl's converted fairseq checkpoints
        model_cfg, task_cfg, state = (
            _plain(checkpoint["model_cfg"]),
            _plain(checkpoint.get("task_cfg") or {}),
            checkpoint["model_weight"],
        )
    else:
        state = checkpoint["model"]
        cfg = _plain(checkpoint.get("cfg") or checkpoint.get("args"))
        if cfg is None:
            raise ValueError(f"{source}: fairseq checkpoint without 'cfg' or 'args'")
        nested = isinstance(cfg.get("model"), dict)
        model_cfg = _plain(cfg["model"]) if nested else cfg
        task_cfg = _plain(cfg.get("task") or {}) if nested else cfg
    if any(key.startswith("w2v_encoder.w2v_model.") for key in state):  # fine-tuned: the encoder is nested
        state = {
            k[len("w2v_encoder.w2v_model.") :]: v
            for k, v in state.items()
            if k.startswith("w2v_encoder.w2v_model.")
        }
        w2v_args = _plain(model_cfg.get("w2v_args") or {})
        model_cfg = _plain(w2v_args.get("model", w2v_args)) or model_cfg
    if family is None:
        if model_cfg.get("relative_position_embedding") or any("relative_attention_bias" in k for k in state):
            family = "wavlm"
        elif model_cfg.get("_name") in ("hubert", "wav2vec2"):
            family = model_cfg["_name"]
        else:
            family = "hubert" if "label_embs_concat" in state else "wav2vec2"
    if model_cfg.get("layer_type", "transformer") != "transformer" or model_cfg.get("pos_conv_depth", 1) != 1:
        raise ValueError(
            f"{source}: only the standard transformer encoder is supported (layer_type, pos_conv_depth)"
        )
    if family == "wavlm" and not model_cfg.get("gru_rel_pos", True):
        raise ValueError(
            f"{source}: WavLM without the gated relative position bias (gru_rel_pos=False) is not supported"
        )
    if model_cfg.get("activation_fn", "gelu") != "gelu":
        raise ValueError(f"{source}: activation_fn={model_cfg['activation_fn']!r} is not supported")
    conv_layers = parse_conv_layers(
        model_cfg.get("conv_feature_layers", "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] * 2")
    )
    layers = model_cfg.get("encoder_layers", 12)
    heads = model_cfg.get("encoder_attention_heads", 12)
    dim = model_cfg.get("encoder_embed_dim", 768)
    if "post_extract_proj.weight" not in state:
        raise ValueError(
            f"{source}: no post_extract_proj (conv width equals the encoder width); not supported"
        )
    config = EncoderConfig(
        family=family,
        conv_channels=[c for c, _, _ in conv_layers],
        conv_kernels=[k for _, k, _ in conv_layers],
        conv_strides=[s for _, _, s in conv_layers],
        conv_bias=bool(model_cfg.get("conv_bias", False)),
        extractor_norm="layer" if model_cfg.get("extractor_mode", "default") == "layer_norm" else "group",
        normalize_waveform=bool(task_cfg.get("normalize", model_cfg.get("normalize", False))),
        embed_dim=dim,
        head_dim=dim // heads,
        attention_heads=[list(range(heads)) for _ in range(layers)],
        use_attention=[True] * layers,
        ffn_dims=[model_cfg.get("encoder_ffn_embed_dim", 3072)] * layers,
        use_ffn=[True] * layers,
        layer_norm_first=bool(model_cfg.get("layer_norm_first", False)),
        pos_conv_kernel=model_cfg.get("conv_pos", 128),
        pos_conv_groups=model_cfg.get("conv_pos_groups", 16),
        num_buckets=model_cfg.get("num_buckets", 320),
        max_distance=model_cfg.get("max_distance", 800),
        relative_position_heads=heads if family == "wavlm" else 0,
        mask_embedding="mask_emb" in state,
        dropout=model_cfg.get("dropout", 0.1),
        attention_dropout=model_cfg.get("attention_dropout", 0.1),
        activation_dropout=model_cfg.get("activation_dropout", 0.0),
        projection_dropout=model_cfg.get("dropout_input", 0.0),
        layer_drop=model_cfg.get("encoder_layerdrop", 0.0),
    )
    return config, _rename(state, _FAIRSEQ_RULES, _FAIRSEQ_IGNORED, source)


# ---------------------------------------------------------------------- dispatch
def from_checkpoint_file(path: str | Path, family: str | None = None) -> SpeechEncoder:
    """Import a ``.pt`` / ``.pth`` file (fairseq, WavLM, s3prl-converted or DPHuBERT), never unpickling code."""
    path = Path(path)
    checkpoint = safe_torch_load(path)
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{path} holds a {type(checkpoint).__name__}, not a checkpoint dict")
    if (
        "state_dict" in checkpoint
        and isinstance(checkpoint.get("config"), Mapping)
        and "encoder_num_layers" in checkpoint["config"]
    ):
        params = checkpoint["config"]
        if family is None:
            wavlm = "encoder_remaining_heads" in params or "encoder_num_buckets" in params
            family = "wavlm" if wavlm else "hubert"
        config, state = convert_torchaudio(params, checkpoint["state_dict"], family, str(path))
    elif "model_weight" in checkpoint or (
        "model" in checkpoint and ("cfg" in checkpoint or "args" in checkpoint)
    ):
        config, state = convert_fairseq(checkpoint, family, str(path))
    else:
        keys = sorted(checkpoint)[:8]
        raise ValueError(
            f"{path}: unrecognised checkpoint layout (top-level keys {keys}); expected DPHuBERT "
            "{state_dict, config}, fairseq {cfg|args, model} or s3prl {model_cfg, model_weight}. "
            "A bare state dict has no architecture: save it with its config."
        )
    return build_encoder(config, state, str(path))


def load_upstream(
    source: str | Path | SpeechEncoder, family: str | None = None, device: str = "cpu"
) -> SpeechEncoder:
    """Load an encoder from any supported source (see the module docstring), in eval mode.

    Args:
        source: compact checkpoint dir, transformers dir or hub name, ``torchaudio:BUNDLE``, a
            fairseq / WavLM / DPHuBERT ``.pt``/``.pth`` file, ``preset:NAME`` (random weights), or a
            ``SpeechEncoder`` (returned as is).
        family: ``"hubert"``, ``"wav2vec2"`` or ``"wavlm"`` for formats that cannot tell HuBERT from
            wav2vec 2.0 (DPHuBERT files default to HuBERT).
        device: where to put the weights.
    """
    from upstreams.checkpoint import is_compact_checkpoint, load_compact

    if isinstance(source, SpeechEncoder):
        return source
    text = str(source)
    path = Path(text).expanduser()
    if text.startswith("torchaudio:"):
        model = from_torchaudio_bundle(text.split(":", 1)[1])
    elif text.startswith("preset:"):
        from upstreams import PRESETS

        logger.warning("%s has random weights", text)
        model = PRESETS.get(text.split(":", 1)[1])()
    elif path.is_dir():
        if is_compact_checkpoint(path):
            model = load_compact(path)
        elif (path / "config.json").is_file():
            model = from_transformers(path)
        else:
            raise ValueError(
                f"{path} is neither a compact checkpoint nor a transformers model directory (no config.json)"
            )
    elif path.is_file():
        if path.suffix == ".safetensors":
            raise ValueError(
                f"{path}: a bare safetensors file has no architecture; pass its directory with config.json"
            )
        model = from_checkpoint_file(path, family)
    elif (
        re.fullmatch(r"[\w.-]+/[\w.-]+", text)
        and not text.startswith((".", "~"))
        and path.suffix not in _FILE_SUFFIXES
    ):
        model = from_transformers(text)
    else:
        raise FileNotFoundError(
            f"upstream {text!r} not found: give a checkpoint directory or file, a Hugging Face hub name "
            "(org/name), torchaudio:BUNDLE or preset:NAME"
        )
    return model.to(device).eval()
