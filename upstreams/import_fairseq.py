"""Import fairseq wav2vec 2.0 / HuBERT checkpoints, original WavLM checkpoints and s3prl's converted ones.

Layouts: fairseq ``{"cfg": {"model": ..., "task": ...}, "model": state}`` (or ``{"args": Namespace}``
in older files), WavLM ``{"cfg": {flat model config}, "model": state}``, s3prl
``{"model_cfg", "task_cfg", "model_weight"}``. Fine-tuned fairseq models (``w2v_encoder.w2v_model.``)
are reduced to their encoder.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Mapping
from typing import Any

from upstreams.config import EncoderConfig
from upstreams.convert import WEIGHT_NORM, Rename, check_family, rename_keys

logger = logging.getLogger(__name__)

_FAIRSEQ_RULES: list[Rename] = [
    (r"^feature_extractor\.conv_layers\.(\d+)\.0\.", r"feature_extractor.conv_layers.\1.conv."),
    (r"^feature_extractor\.conv_layers\.(\d+)\.2\.(1\.)?", r"feature_extractor.conv_layers.\1.norm."),
    (r"^layer_norm\.", "feature_projection.layer_norm."),
    (r"^post_extract_proj\.", "feature_projection.projection."),
    (r"^mask_emb$", "mask_embedding"),
    *[(r"^encoder\.pos_conv\.0\." + p, "transformer.pos_conv." + r) for p, r in WEIGHT_NORM],
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
    wavlm = bool(model_cfg.get("relative_position_embedding")) or any("relative_attention_bias" in k for k in state)
    family = check_family(family, wavlm, source)
    if family is None:
        if wavlm:
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
    return config, rename_keys(state, _FAIRSEQ_RULES, _FAIRSEQ_IGNORED, source)
