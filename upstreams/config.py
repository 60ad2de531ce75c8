"""The architecture description of a (possibly pruned) HuBERT / WavLM / wav2vec 2.0 encoder.

An :class:`EncoderConfig` is everything needed to rebuild a :class:`~upstreams.model.SpeechEncoder`
with no training code: it is stored as ``config.json`` next to the weights in a compact checkpoint.
Per-layer sizes are lists, so a pruned model (fewer conv channels, heads or FFN units in some
layers, or whole attention / FFN blocks removed) is described by the same dataclass as the
original.

The parameter count of the model a config builds is a closed formula of the config; the same
formula is exposed with float or tensor "kept" counts (:func:`expected_num_params`) so that a
pruning method can use it as a differentiable size estimate.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

FAMILIES = ("hubert", "wav2vec2", "wavlm")
EXTRACTOR_NORMS = ("group", "layer")
# The 7-layer convolutional feature extractor shared by every Base and Large model (320x downsampling).
BASE_CONV_KERNELS = [10, 3, 3, 3, 3, 2, 2]
BASE_CONV_STRIDES = [5, 2, 2, 2, 2, 2, 2]


@dataclass
class EncoderConfig:
    """Architecture of a speech encoder; lists hold one entry per conv layer or per transformer layer.

    Args:
        family: ``"hubert"``, ``"wav2vec2"`` or ``"wavlm"`` (WavLM adds the gated relative position bias).
        conv_channels: output channels of each conv layer of the feature extractor.
        conv_kernels, conv_strides: kernel size and stride of each conv layer.
        conv_bias: whether the conv layers have a bias (False in Base, True in wav2vec 2.0 Large LV-60k).
        extractor_norm: ``"group"`` (one per-channel GroupNorm in the first conv layer, Base) or
            ``"layer"`` (a LayerNorm over channels after every conv layer, Large).
        extractor_output_scale: multiply the extractor output by a learned per-channel vector
            (holds the soft mask values of the last conv layer after pruning; DPHuBERT's ``dummy_weight``).
        extractor_phantom_channels: number of pruned (all-zero) extractor output channels that still
            count in the feature projection's LayerNorm statistics, which keeps pruning exact.
        projection_layer_norm: LayerNorm on the conv features before the projection (True for all
            published models).
        normalize_waveform: standardise each waveform (zero mean, unit variance over its valid samples)
            before the extractor; True for the Large models trained with ``normalize=True``.
        embed_dim: transformer width D (768 Base, 1024 Large). Never pruned.
        head_dim: width of one attention head (64).
        attention_heads: per layer, the original indices of the kept heads (``list(range(12))`` when
            unpruned). WavLM uses them to pick each head's slice of the gate input and its column of
            the relative position table; other families only use their count.
        use_attention: per layer, whether the attention block exists. A block with zero heads that
            still exists contributes only its output bias.
        ffn_dims: per layer, the FFN intermediate size (3072 Base).
        use_ffn: per layer, whether the FFN block exists (zero units: output bias only).
        layer_norm_first: pre-LN transformer (Large) instead of post-LN (Base).
        pos_conv_kernel, pos_conv_groups: convolutional positional embedding (128, 16).
        num_buckets, max_distance, relative_position_heads: WavLM relative position bias table
            ``[num_buckets, relative_position_heads]`` (320, 800, original head count).
            ``relative_position_heads=0``: a WavLM without the bias, as a DPHuBERT WavLM whose
            layer-0 attention (which holds the table in the official code) was pruned away runs.
        mask_embedding: learned vector that replaces masked frames (HuBERT pretraining).
        layer_norm_eps: epsilon of every normalisation layer.
        dropout, attention_dropout, activation_dropout, projection_dropout: training-time dropout
            (hidden states, attention weights, FFN hidden units, after the feature projection).
        layer_drop: training-time probability of skipping a transformer layer; a skipped layer
            repeats its input, so the number of hidden states never changes.
    """

    family: str = "hubert"
    conv_channels: list[int] = field(default_factory=lambda: [512] * 7)
    conv_kernels: list[int] = field(default_factory=lambda: list(BASE_CONV_KERNELS))
    conv_strides: list[int] = field(default_factory=lambda: list(BASE_CONV_STRIDES))
    conv_bias: bool = False
    extractor_norm: str = "group"
    extractor_output_scale: bool = False
    extractor_phantom_channels: int = 0
    projection_layer_norm: bool = True
    normalize_waveform: bool = False
    embed_dim: int = 768
    head_dim: int = 64
    attention_heads: list[list[int]] = field(default_factory=lambda: [list(range(12)) for _ in range(12)])
    use_attention: list[bool] = field(default_factory=lambda: [True] * 12)
    ffn_dims: list[int] = field(default_factory=lambda: [3072] * 12)
    use_ffn: list[bool] = field(default_factory=lambda: [True] * 12)
    layer_norm_first: bool = False
    pos_conv_kernel: int = 128
    pos_conv_groups: int = 16
    num_buckets: int = 320
    max_distance: int = 800
    relative_position_heads: int = 0
    mask_embedding: bool = True
    layer_norm_eps: float = 1e-5
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    projection_dropout: float = 0.1
    layer_drop: float = 0.0

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ derived sizes
    @property
    def num_layers(self) -> int:
        return len(self.attention_heads)

    @property
    def num_heads(self) -> list[int]:
        """Number of kept heads per layer."""
        return [len(ids) for ids in self.attention_heads]

    @property
    def extractor_dim(self) -> int:
        """Width of the conv features fed to the feature projection."""
        return self.conv_channels[-1]

    @property
    def downsample_rate(self) -> int:
        """Waveform samples per output frame (320 for every published model)."""
        rate = 1
        for stride in self.conv_strides:
            rate *= stride
        return rate

    @property
    def receptive_field(self) -> int:
        """Samples seen by one output frame; shorter inputs give no frame (400 for the standard extractor)."""
        field_, jump = 1, 1
        for kernel, stride in zip(self.conv_kernels, self.conv_strides, strict=True):
            field_ += (kernel - 1) * jump
            jump *= stride
        return field_

    # ------------------------------------------------------------------ validation / serialisation
    def validate(self) -> None:
        """Raise ``ValueError`` naming the first inconsistent field."""

        def fail(message: str) -> None:
            raise ValueError(f"invalid EncoderConfig: {message}")

        if self.family not in FAMILIES:
            fail(f"family={self.family!r}; expected one of {FAMILIES}")
        if self.extractor_norm not in EXTRACTOR_NORMS:
            fail(f"extractor_norm={self.extractor_norm!r}; expected one of {EXTRACTOR_NORMS}")
        n_conv = len(self.conv_channels)
        if n_conv == 0 or len(self.conv_kernels) != n_conv or len(self.conv_strides) != n_conv:
            fail("conv_channels, conv_kernels and conv_strides must be non-empty lists of equal length")
        if min(self.conv_channels) < 1 or min(self.conv_kernels) < 1 or min(self.conv_strides) < 1:
            fail("conv_channels, conv_kernels and conv_strides must be positive")
        if self.extractor_phantom_channels < 0:
            fail("extractor_phantom_channels must be >= 0")
        if self.embed_dim < 1 or self.head_dim < 1:
            fail("embed_dim and head_dim must be positive")
        n = self.num_layers
        for name in ("use_attention", "ffn_dims", "use_ffn"):
            if len(getattr(self, name)) != n:
                fail(f"{name} has {len(getattr(self, name))} entries but attention_heads has {n} layers")
        for layer, ids in enumerate(self.attention_heads):
            if len(set(ids)) != len(ids) or any(i < 0 for i in ids):
                fail(f"attention_heads[{layer}]={ids} must be distinct non-negative head indices")
            if ids and not self.use_attention[layer]:
                fail(f"layer {layer} has heads {ids} but use_attention[{layer}] is False")
        if min(self.ffn_dims, default=0) < 0:
            fail("ffn_dims must be >= 0")
        for layer, (dim, used) in enumerate(zip(self.ffn_dims, self.use_ffn, strict=True)):
            if dim and not used:
                fail(f"layer {layer} has ffn_dims={dim} but use_ffn[{layer}] is False")
        if self.embed_dim % self.pos_conv_groups:
            fail(f"embed_dim={self.embed_dim} is not divisible by pos_conv_groups={self.pos_conv_groups}")
        if self.family == "wavlm":
            if self.relative_position_heads < 0:
                fail("wavlm needs relative_position_heads >= 0 (the original number of heads; 0: no position bias)")
            if self.embed_dim % self.head_dim:
                fail(
                    "wavlm needs embed_dim divisible by head_dim (the gate reads one head_dim slice per head)"
                )
            slices = min(self.relative_position_heads or self.embed_dim, self.embed_dim // self.head_dim)
            for layer, ids in enumerate(self.attention_heads):
                if ids and max(ids) >= slices:
                    fail(f"attention_heads[{layer}] has head index {max(ids)} >= {slices} original heads")
        for name in (
            "dropout",
            "attention_dropout",
            "activation_dropout",
            "projection_dropout",
            "layer_drop",
        ):
            if not 0.0 <= getattr(self, name) < 1.0:
                fail(f"{name}={getattr(self, name)} must be in [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EncoderConfig:
        """Build from a dict (e.g. parsed ``config.json``); unknown keys raise ``ValueError``."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown EncoderConfig keys {unknown}; known keys: {sorted(known)}")
        values = dict(data)
        for key in ("conv_channels", "conv_kernels", "conv_strides", "ffn_dims", "use_attention", "use_ffn"):
            if key in values:
                values[key] = list(values[key])
        if "attention_heads" in values:
            values["attention_heads"] = [list(ids) for ids in values["attention_heads"]]
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def replace(self, **changes: Any) -> EncoderConfig:
        """A validated copy with some fields changed."""
        return EncoderConfig.from_dict({**self.to_dict(), **changes})

    def num_params(self) -> int:
        """Exact number of parameters of the model this config builds."""
        return int(expected_num_params(self))

    def describe(self) -> str:
        """One line summary, e.g. ``hubert 12L D=768 heads 144 ffn 36864 conv 3584``."""
        return (
            f"{self.family} {self.num_layers}L D={self.embed_dim} heads {sum(self.num_heads)} "
            f"ffn {sum(self.ffn_dims)} conv {sum(self.conv_channels)} "
            f"({'pre' if self.layer_norm_first else 'post'}-LN, {self.extractor_norm}-norm extractor)"
        )


def mask_names(config: EncoderConfig) -> dict[str, tuple[int, ...]]:
    """Every mask a model of this config accepts (see ``SpeechEncoder.set_masks``) and its shape.

    ``conv.{i}.channels`` ``[C_i]``; ``layer.{l}.heads`` ``[H_l]``; ``layer.{l}.attention`` ``[]``;
    ``layer.{l}.ffn_units`` ``[F_l]``; ``layer.{l}.ffn`` ``[]``; ``layer.{l}`` ``[]``. Structures that
    do not exist (a removed block, a block with no units) have no mask.
    """
    names: dict[str, tuple[int, ...]] = {}
    for i, channels in enumerate(config.conv_channels):
        names[f"conv.{i}.channels"] = (channels,)
    for layer in range(config.num_layers):
        if config.use_attention[layer]:
            if config.num_heads[layer]:
                names[f"layer.{layer}.heads"] = (config.num_heads[layer],)
            names[f"layer.{layer}.attention"] = ()
        if config.use_ffn[layer]:
            if config.ffn_dims[layer]:
                names[f"layer.{layer}.ffn_units"] = (config.ffn_dims[layer],)
            names[f"layer.{layer}.ffn"] = ()
        if config.use_attention[layer] or config.use_ffn[layer]:
            names[f"layer.{layer}"] = ()
    return names


def expected_num_params(config: EncoderConfig, kept: Mapping[str, Any] | None = None) -> Any:
    """Parameter count of ``config`` with some structures replaced by (expected) kept amounts.

    ``kept`` maps mask names (see :func:`mask_names`) to the expected number of kept units
    (``conv.{i}.channels``, ``layer.{l}.heads``, ``layer.{l}.ffn_units``) or the probability that a
    whole structure is kept (``layer.{l}.attention``, ``layer.{l}.ffn``, ``layer.{l}``). Values may
    be floats or tensors (the result is then a differentiable tensor, DPHuBERT's size term); names
    not given keep the config's own sizes. With integer counts and 0/1 probabilities the result is
    exactly ``num_params()`` of the model that ``prune()`` returns for such masks, because both use
    this formula. Giving a mask for the last conv layer counts the extractor output scale that
    pruning adds.
    """
    kept = dict(kept or {})
    unknown = sorted(set(kept) - set(mask_names(config)))
    if unknown:
        raise ValueError(f"unknown structure names {unknown}; see upstreams.config.mask_names(config)")
    dim = config.embed_dim
    total: Any = 0

    # Convolutional feature extractor: channels chain from layer to layer.
    in_channels: Any = 1
    last = len(config.conv_channels) - 1
    for i, (channels, kernel) in enumerate(zip(config.conv_channels, config.conv_kernels, strict=True)):
        out_channels = kept.get(f"conv.{i}.channels", channels)
        total = total + in_channels * out_channels * kernel
        if config.conv_bias:
            total = total + out_channels
        if config.extractor_norm == "layer" or i == 0:
            total = total + 2 * out_channels
        in_channels = out_channels
    if config.extractor_output_scale or f"conv.{last}.channels" in kept:
        total = total + in_channels
    # Feature projection (LayerNorm + Linear to D), positional conv (weight norm), encoder LayerNorm.
    if config.projection_layer_norm:
        total = total + 2 * in_channels
    total = total + (in_channels + 1) * dim
    total = (
        total + dim * (dim // config.pos_conv_groups) * config.pos_conv_kernel + config.pos_conv_kernel + dim
    )
    total = total + 2 * dim
    if config.mask_embedding:
        total = total + dim
    if config.family == "wavlm":
        total = total + config.num_buckets * config.relative_position_heads

    for layer in range(config.num_layers):
        layer_keep = kept.get(f"layer.{layer}", 1.0)
        if config.use_attention[layer]:
            heads = kept.get(f"layer.{layer}.heads", config.num_heads[layer])
            width = heads * config.head_dim
            attention = (dim + 1) * width * 3 + (width + 1) * dim
            if config.family == "wavlm":
                # the gate projection exists only while at least one head is kept
                has_heads = min(heads, 1) if isinstance(heads, int | float) else heads.clamp(max=1.0)
                attention = attention + heads + has_heads * (config.head_dim * 8 + 8)
            if config.layer_norm_first:  # the pre-attention LayerNorm exists only with the block
                attention = attention + 2 * dim
            total = total + attention * kept.get(f"layer.{layer}.attention", 1.0) * layer_keep
        if config.use_ffn[layer]:
            units = kept.get(f"layer.{layer}.ffn_units", config.ffn_dims[layer])
            ffn = (dim + 1) * units + (units + 1) * dim
            if config.layer_norm_first:
                ffn = ffn + 2 * dim
            total = total + ffn * kept.get(f"layer.{layer}.ffn", 1.0) * layer_keep
        if not config.layer_norm_first:  # post-LN layers always keep both LayerNorms
            total = total + 4 * dim
    return total
