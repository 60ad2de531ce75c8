"""Physical pruning and layer truncation of a :class:`~upstreams.model.SpeechEncoder`'s weights.

Pure functions over an :class:`~upstreams.config.EncoderConfig`, a state dict (our key layout) and
masks: each returns the ``(config, state dict)`` of a new, smaller model and builds no module, so
this module knows nothing of ``upstreams.model`` (which calls it: ``SpeechEncoder.prune()`` and
``SpeechEncoder.truncate()`` build the new encoder from the result).

``prune_state(config, state, masks)`` takes the masks set on a model (``SpeechEncoder.set_masks``,
names as in ``upstreams.config.mask_names``) and gives the weights of a compact model whose output
equals the masked model's:

- soft kept values are folded into the next layer's weights: a conv layer's channel mask into the
  next conv's input columns (the last conv layer's into the extractor output scale), head masks
  into ``out_proj``'s input columns, FFN unit masks into ``output_dense``'s input columns, block and
  layer masks into the block's output projection and bias;
- units whose mask is exactly zero are removed; a block whose scale is zero is removed;
- removed last-layer conv channels are remembered as "phantom" zeros of the feature projection's
  LayerNorm so that its statistics do not change, and their normalised value (a linear function of
  the kept channels' values) is folded into the projection (see ``_prune_projection_inputs``).

The result is exact (up to float rounding) except for one case: removing channels of a conv layer
followed by a LayerNorm over channels (layer-norm extractors, Large models) changes that
LayerNorm's statistics, as in DPHuBERT; a warning is logged.

The number of transformer layers never changes in ``prune_state``; ``truncate_state`` drops
trailing layers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
from torch import Tensor

from upstreams.config import EncoderConfig

State = dict[str, Tensor]

logger = logging.getLogger(__name__)


def _kept(mask: Tensor | None, size: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """(float scale per unit, indices of the units whose scale is non-zero)."""
    if mask is None:
        scale = torch.ones(size, dtype=like.dtype, device=like.device)
    else:
        scale = mask.detach().reshape(size).to(dtype=like.dtype, device=like.device)
    return scale, torch.nonzero(scale, as_tuple=True)[0]


def _scalar(mask: Tensor | None) -> float:
    return 1.0 if mask is None else float(mask.detach().reshape(()))


@torch.no_grad()
def prune_state(
    config: EncoderConfig, state: Mapping[str, Tensor], masks: Mapping[str, Tensor]
) -> tuple[EncoderConfig, State]:
    """Fold ``masks`` into the weights ``state`` of ``config`` and remove zero-masked structures.

    Args:
        config: the architecture ``state`` belongs to.
        state: ``SpeechEncoder(config).state_dict()``; not changed (the result holds copies).
        masks: mask values by name (``SpeechEncoder.masks()``: shapes as in ``mask_names(config)``);
            a structure without a mask is kept as it is.
    Returns:
        ``(compact config, compact state)``: ``SpeechEncoder(compact config)`` loads the state
        strictly and, with no masks, computes what the masked model computes.
    """
    state = {name: tensor.detach().clone() for name, tensor in state.items()}
    changes: dict = {}

    # ------------------------------------------------------------------ conv feature extractor
    channels = list(config.conv_channels)
    approximate = []
    prefix = "feature_extractor.conv_layers"
    last = len(channels) - 1
    output_scale = state.get("feature_extractor.output_scale")
    phantom = config.extractor_phantom_channels
    for i in range(len(channels)):
        mask = masks.get(f"conv.{i}.channels")
        if mask is None:
            continue
        weight = state[f"{prefix}.{i}.conv.weight"]
        scale, keep = _kept(mask, channels[i], weight)
        if len(keep) == 0:
            raise ValueError(f"conv layer {i} would lose all its channels; keep at least one")
        if i < last:  # fold the soft values into the next conv's input channels
            next_weight = state[f"{prefix}.{i + 1}.conv.weight"]
            state[f"{prefix}.{i + 1}.conv.weight"] = (next_weight * scale[None, :, None])[:, keep]
        else:  # the feature projection LayerNorm is not linear: keep the values as an output scale
            output_scale = (output_scale if output_scale is not None else torch.ones_like(scale)) * scale
            output_scale = output_scale[keep]
            phantom += channels[i] - len(keep)
            _prune_projection_inputs(state, keep, channels[i], phantom)
        for name in ("conv.weight", "conv.bias", "norm.weight", "norm.bias"):
            key = f"{prefix}.{i}.{name}"
            if key in state:
                state[key] = state[key][keep]
        if len(keep) < channels[i] and config.extractor_norm == "layer":
            approximate.append(i)
        channels[i] = len(keep)
    if approximate:
        logger.warning(
            "pruned channels of conv layers %s, whose LayerNorm over channels then sees fewer channels: "
            "the pruned model only approximates the masked one there (as in DPHuBERT)",
            approximate,
        )
    if output_scale is not None:
        state["feature_extractor.output_scale"] = output_scale
    changes.update(
        conv_channels=channels,
        extractor_output_scale=output_scale is not None,
        extractor_phantom_channels=phantom,
    )

    # ------------------------------------------------------------------ transformer layers
    heads = [list(ids) for ids in config.attention_heads]
    use_attention = list(config.use_attention)
    ffn_dims = list(config.ffn_dims)
    use_ffn = list(config.use_ffn)
    for layer in range(config.num_layers):
        prefix = f"transformer.layers.{layer}"
        layer_scale = _scalar(masks.get(f"layer.{layer}"))
        if use_attention[layer]:
            scale = _scalar(masks.get(f"layer.{layer}.attention")) * layer_scale
            heads[layer] = _prune_attention(
                state,
                f"{prefix}.attention",
                heads[layer],
                config.head_dim,
                masks.get(f"layer.{layer}.heads"),
                scale,
            )
            if scale == 0.0:
                use_attention[layer] = False
                heads[layer] = []
                _drop(state, f"{prefix}.attention.")
                if config.layer_norm_first:
                    _drop(state, f"{prefix}.layer_norm.")
        if use_ffn[layer]:
            scale = _scalar(masks.get(f"layer.{layer}.ffn")) * layer_scale
            ffn_dims[layer] = _prune_ffn(
                state, f"{prefix}.feed_forward", ffn_dims[layer], masks.get(f"layer.{layer}.ffn_units"), scale
            )
            if scale == 0.0:
                use_ffn[layer] = False
                ffn_dims[layer] = 0
                _drop(state, f"{prefix}.feed_forward.")
                if config.layer_norm_first:
                    _drop(state, f"{prefix}.final_layer_norm.")
    changes.update(attention_heads=heads, use_attention=use_attention, ffn_dims=ffn_dims, use_ffn=use_ffn)
    return config.replace(**changes), state


def _prune_projection_inputs(state: State, keep: Tensor, channels: int, phantom: int) -> None:
    """Remove extractor output channels that are exactly zero from the feature projection, exactly.

    A zero channel still shifts the LayerNorm statistics (handled by counting it as a phantom) and
    its normalised value ``s = -mean/std`` reaches the projection. Because normalised values sum to
    zero over all channels, ``s = -sum(z_kept) / phantom``: a linear function of the kept channels'
    normalised values ``z``. So the LayerNorm affine is folded into the projection, the zero
    channels' contribution is spread over the kept columns, and the affine becomes the identity.
    """
    weight = state["feature_projection.projection.weight"]
    if "feature_projection.layer_norm.weight" not in state or len(keep) == channels:
        state["feature_projection.projection.weight"] = weight[:, keep]
        for name in ("feature_projection.layer_norm.weight", "feature_projection.layer_norm.bias"):
            if name in state:
                state[name] = state[name][keep]
        return
    norm_weight = state["feature_projection.layer_norm.weight"]
    norm_bias = state["feature_projection.layer_norm.bias"]
    dropped = torch.ones(channels, dtype=torch.bool, device=keep.device)
    dropped[keep] = False
    scaled = weight * norm_weight[None, :]  # projection of the normalised values z
    correction = scaled[:, dropped].sum(dim=1, keepdim=True) / phantom
    state["feature_projection.projection.bias"] = (
        state["feature_projection.projection.bias"] + weight @ norm_bias
    )
    state["feature_projection.projection.weight"] = scaled[:, keep] - correction
    state["feature_projection.layer_norm.weight"] = torch.ones_like(norm_weight[keep])
    state["feature_projection.layer_norm.bias"] = torch.zeros_like(norm_bias[keep])


def _drop(state: State, prefix: str) -> None:
    for name in [name for name in state if name.startswith(prefix)]:
        del state[name]


def _prune_attention(
    state: State,
    prefix: str,
    head_ids: list[int],
    head_dim: int,
    mask: Tensor | None,
    scale: float,
) -> list[int]:
    """Fold head mask and block scale into ``out_proj``; drop zero heads. Returns the kept head ids."""
    out_weight = state[f"{prefix}.out_proj.weight"]
    head_scale, keep = _kept(mask, len(head_ids), out_weight)
    columns = (keep[:, None] * head_dim + torch.arange(head_dim, device=keep.device)[None, :]).reshape(-1)
    out_weight = out_weight * head_scale.repeat_interleave(head_dim)[None, :] * scale
    state[f"{prefix}.out_proj.weight"] = out_weight[:, columns]
    state[f"{prefix}.out_proj.bias"] = state[f"{prefix}.out_proj.bias"] * scale
    for name in ("q_proj", "k_proj", "v_proj"):
        state[f"{prefix}.{name}.weight"] = state[f"{prefix}.{name}.weight"][columns]
        state[f"{prefix}.{name}.bias"] = state[f"{prefix}.{name}.bias"][columns]
    if f"{prefix}.gru_rel_pos_const" in state:
        state[f"{prefix}.gru_rel_pos_const"] = state[f"{prefix}.gru_rel_pos_const"][keep]
        if len(keep) == 0:  # the gate projection only exists while a head remains
            _drop(state, f"{prefix}.gru_rel_pos_")
    return [head_ids[i] for i in keep.tolist()]


def _prune_ffn(state: State, prefix: str, units: int, mask: Tensor | None, scale: float) -> int:
    """Fold unit mask and block scale into ``output_dense``; drop zero units. Returns the kept count."""
    out_weight = state[f"{prefix}.output_dense.weight"]
    unit_scale, keep = _kept(mask, units, out_weight)
    state[f"{prefix}.output_dense.weight"] = (out_weight * unit_scale[None, :] * scale)[:, keep]
    state[f"{prefix}.output_dense.bias"] = state[f"{prefix}.output_dense.bias"] * scale
    state[f"{prefix}.intermediate_dense.weight"] = state[f"{prefix}.intermediate_dense.weight"][keep]
    state[f"{prefix}.intermediate_dense.bias"] = state[f"{prefix}.intermediate_dense.bias"][keep]
    return len(keep)


@torch.no_grad()
def truncate_state(
    config: EncoderConfig,
    state: Mapping[str, Tensor],
    num_layers: int,
    masks: Mapping[str, Tensor] | None = None,
) -> tuple[EncoderConfig, State]:
    """The config and weights of the first ``num_layers`` transformer layers of ``config``'s model.

    Its hidden states are the first ``num_layers + 1`` of the original's; a pre-LN model keeps its
    final LayerNorm (``last_hidden_state``).

    Args:
        config: the architecture ``state`` belongs to.
        state: ``SpeechEncoder(config).state_dict()``; not changed (the result holds copies).
        num_layers: layers to keep, ``1 <= num_layers <= config.num_layers``.
        masks: the masks set on the model ``state`` comes from; they must be folded first
            (:func:`prune_state`), because the weights alone do not carry them.
    """
    if not 1 <= num_layers <= config.num_layers:
        raise ValueError(f"num_layers must be between 1 and {config.num_layers}, got {num_layers}")
    if masks:
        raise ValueError("the model has masks set; call prune() first (or clear_masks()) before truncate()")
    changes = {
        name: getattr(config, name)[:num_layers]
        for name in ("attention_heads", "use_attention", "ffn_dims", "use_ffn")
    }
    kept = {
        name: tensor.detach().clone()
        for name, tensor in state.items()
        if not name.startswith("transformer.layers.") or int(name.split(".")[2]) < num_layers
    }
    return config.replace(**changes), kept
