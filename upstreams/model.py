"""The prunable speech encoder (HuBERT, WavLM, wav2vec 2.0) and its named architectures.

The model sits at the bottom of ``upstreams``' one-way layout (as in torchaudio): it imports only
``config``, ``components`` and ``pruning``, builds modules from an
:class:`~upstreams.config.EncoderConfig` and knows no files. Reading and writing checkpoints is
``upstreams.checkpoint`` / ``upstreams.importers``; cost is ``upstreams.cost``; the weight surgery
behind :meth:`SpeechEncoder.prune` and :meth:`SpeechEncoder.truncate` is the pure functions of
``upstreams.pruning``.

Hidden states
-------------
``SpeechEncoder.forward`` returns ``num_layers + 1`` hidden states, all ``[batch, frame, D]``:

- ``hidden_states[0]``: output of the feature projection, before the positional convolution
  (after masked frames are replaced by the mask embedding; zero at padded frames). This is the
  state DPHuBERT distils as "layer 0".
- ``hidden_states[l]`` for ``l >= 1``: output of transformer layer ``l``, exactly as
  ``transformers`` 5.x returns it in ``output_hidden_states[l]`` (and as torchaudio's
  ``extract_features`` returns it in entry ``l - 1``). For pre-LN (``layer_norm_first``) models no
  final LayerNorm is applied; ``last_hidden_state(hidden_states)`` gives transformers'
  ``last_hidden_state`` (the final LayerNorm of the last layer's output).

``transformers``' own ``output_hidden_states[0]`` is the input of the first layer (after the
positional convolution and, for post-LN models, the encoder LayerNorm); it has no counterpart here.
The number of hidden states never changes between calls (layer drop repeats a layer's input).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.registry import Registry
from upstreams.components import (
    ConvLayerBlock,
    EncoderLayer,
    FeatureExtractor,
    FeatureProjection,
    FeedForward,
    PositionalConvEmbedding,
    RelativePositionBias,
    SelfAttention,
    Transformer,
    padding_mask,
)
from upstreams.config import BASE_CONV_KERNELS, BASE_CONV_STRIDES, EncoderConfig, mask_names
from upstreams.pruning import prune_state, truncate_state

logger = logging.getLogger(__name__)


def _build_feature_extractor(config: EncoderConfig) -> FeatureExtractor:
    blocks = []
    in_channels = 1
    for i, (channels, kernel, stride) in enumerate(
        zip(config.conv_channels, config.conv_kernels, config.conv_strides, strict=True)
    ):
        norm = "layer" if config.extractor_norm == "layer" else ("group" if i == 0 else None)
        blocks.append(
            ConvLayerBlock(
                in_channels, channels, kernel, stride, config.conv_bias, norm, config.layer_norm_eps
            )
        )
        in_channels = channels
    return FeatureExtractor(nn.ModuleList(blocks), output_scale=config.extractor_output_scale)


def _build_transformer(config: EncoderConfig) -> Transformer:
    layers = nn.ModuleList()
    for layer in range(config.num_layers):
        attention = None
        if config.use_attention[layer]:
            attention = SelfAttention(
                config.embed_dim,
                config.attention_heads[layer],
                config.head_dim,
                dropout=config.attention_dropout,
                gated_relative_position=config.family == "wavlm",
            )
        feed_forward = None
        if config.use_ffn[layer]:
            feed_forward = FeedForward(
                config.embed_dim, config.ffn_dims[layer], config.activation_dropout, config.dropout
            )
        layers.append(
            EncoderLayer(
                attention,
                feed_forward,
                config.embed_dim,
                config.layer_norm_first,
                dropout=config.dropout,
                eps=config.layer_norm_eps,
            )
        )
    relative_position = None
    if config.family == "wavlm" and config.relative_position_heads:
        relative_position = RelativePositionBias(
            config.num_buckets, config.max_distance, config.relative_position_heads
        )
    return Transformer(
        PositionalConvEmbedding(config.embed_dim, config.pos_conv_kernel, config.pos_conv_groups),
        layers,
        config.embed_dim,
        config.layer_norm_first,
        relative_position=relative_position,
        dropout=config.dropout,
        layer_drop=config.layer_drop,
        eps=config.layer_norm_eps,
    )


class SpeechEncoder(nn.Module):
    """HuBERT / WavLM / wav2vec 2.0 encoder built from an :class:`EncoderConfig`.

    Args:
        config: the architecture.
        initialize: give the weights a random initialisation. With False they are left
            uninitialised (fast), for callers that load every weight right after.
    """

    def __init__(self, config: EncoderConfig, initialize: bool = True) -> None:
        super().__init__()
        config.validate()
        self.config = config
        with torch.device("meta"):  # allocate once, below, instead of initialising twice
            self.feature_extractor = _build_feature_extractor(config)
            self.feature_projection = FeatureProjection(
                config.extractor_dim,
                config.embed_dim,
                layer_norm=config.projection_layer_norm,
                phantom_channels=config.extractor_phantom_channels,
                dropout=config.projection_dropout,
                eps=config.layer_norm_eps,
            )
            self.mask_embedding = (
                nn.Parameter(torch.empty(config.embed_dim)) if config.mask_embedding else None
            )
            self.transformer = _build_transformer(config)
        self.to_empty(device="cpu")
        for module in self.modules():
            if isinstance(module, SelfAttention):
                module.head_ids = torch.tensor(module.head_id_list, dtype=torch.long)
        if initialize:
            self.reset_parameters()

    # ------------------------------------------------------------------ forward
    def forward(
        self, waveforms: Tensor, lengths: Tensor | None = None, frame_mask: Tensor | None = None
    ) -> tuple[list[Tensor], Tensor | None]:
        """Encode a batch of 16 kHz waveforms.

        Args:
            waveforms: ``[batch, time]`` float.
            lengths: valid samples of each item ``[batch]`` (the rest is padding), or None. A padded
                batch gives, on each item's valid frames, the same result as the item alone.
            frame_mask: ``[batch, frame]`` bool; True frames are replaced by the learned mask
                embedding after the feature projection (HuBERT pretraining).
        Returns:
            ``(hidden_states, frame_lengths)``: ``num_layers + 1`` tensors ``[batch, frame, D]`` (see
            the module docstring for what each index holds) and the valid frames per item
            ``[batch]`` (None when ``lengths`` is None). Frames past an item's length hold
            unspecified values.
        """
        waveforms, lengths = self._check_inputs(waveforms, lengths)
        if self.config.normalize_waveform:
            waveforms = self._normalize_waveforms(waveforms, lengths)
        features, frame_lengths = self.feature_extractor(waveforms, lengths)
        x = self.feature_projection(features)
        if frame_mask is not None:
            if self.mask_embedding is None:
                raise ValueError(
                    "frame_mask given but this model has no mask embedding (config.mask_embedding)"
                )
            if frame_mask.shape != x.shape[:2] or frame_mask.dtype != torch.bool:
                raise ValueError(
                    f"frame_mask must be bool of shape {list(x.shape[:2])}, got {frame_mask.dtype} {list(frame_mask.shape)}"
                )
            x = torch.where(frame_mask[..., None], self.mask_embedding.to(x.dtype), x)
        key_padding_mask = None
        if frame_lengths is not None and bool((frame_lengths < x.shape[1]).any()):
            key_padding_mask = padding_mask(frame_lengths, x.shape[1])
            x = x.masked_fill(key_padding_mask[..., None], 0.0)
        return [x, *self.transformer(x, key_padding_mask)], frame_lengths

    def _check_inputs(self, waveforms: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
        if waveforms.ndim != 2 or not waveforms.is_floating_point():
            raise ValueError(
                f"waveforms must be a float tensor [batch, time], got {waveforms.dtype} {list(waveforms.shape)}"
            )
        minimum = self.config.receptive_field
        if lengths is None:
            if waveforms.shape[1] < minimum:
                raise ValueError(
                    f"waveforms have {waveforms.shape[1]} samples; at least {minimum} give one frame"
                )
            return waveforms, None
        if lengths.shape != waveforms.shape[:1]:
            raise ValueError(f"lengths must have shape [{waveforms.shape[0]}], got {list(lengths.shape)}")
        lengths = lengths.to(device=waveforms.device, dtype=torch.long)
        if bool((lengths > waveforms.shape[1]).any()) or bool((lengths < minimum).any()):
            raise ValueError(
                f"lengths {lengths.tolist()} must lie in [{minimum}, {waveforms.shape[1]}] "
                f"({minimum} samples give one frame)"
            )
        return waveforms, lengths

    @staticmethod
    def _normalize_waveforms(waveforms: Tensor, lengths: Tensor | None) -> Tensor:
        if lengths is None:
            return F.layer_norm(waveforms, waveforms.shape[-1:])
        valid = ~padding_mask(lengths, waveforms.shape[1])
        count = lengths[:, None].to(waveforms.dtype)
        mean = (waveforms * valid).sum(-1, keepdim=True) / count
        var = (((waveforms - mean) * valid) ** 2).sum(-1, keepdim=True) / count
        return ((waveforms - mean) * torch.rsqrt(var + 1e-5)).masked_fill(~valid, 0.0)

    def last_hidden_state(self, hidden_states: list[Tensor]) -> Tensor:
        """transformers' ``last_hidden_state``: the final LayerNorm of the last state for pre-LN models."""
        if self.config.layer_norm_first:
            return self.transformer.layer_norm(hidden_states[-1])
        return hidden_states[-1]

    def frame_lengths(self, lengths: Tensor) -> Tensor:
        """Valid output frames for waveforms of ``lengths`` samples."""
        for kernel, stride in zip(self.config.conv_kernels, self.config.conv_strides, strict=True):
            lengths = torch.clamp(torch.div(lengths - kernel, stride, rounding_mode="floor") + 1, min=0)
        return lengths

    # ------------------------------------------------------------------ size and pruning
    def num_params(self) -> int:
        """Number of parameters (equals ``config.num_params()``)."""
        return sum(p.numel() for p in self.parameters())

    def mask_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name and shape of every mask :meth:`set_masks` accepts (see ``upstreams.config.mask_names``)."""
        return mask_names(self.config)

    def _mask_slots(self) -> dict[str, tuple[nn.Module, str]]:
        slots: dict[str, tuple[nn.Module, str]] = {}
        for i, block in enumerate(self.feature_extractor.conv_layers):
            slots[f"conv.{i}.channels"] = (block, "channel_mask")
        for index, layer in enumerate(self.transformer.layers):
            if layer.attention is not None:
                if layer.attention.num_heads:
                    slots[f"layer.{index}.heads"] = (layer.attention, "head_mask")
                slots[f"layer.{index}.attention"] = (layer, "attention_block_mask")
            if layer.feed_forward is not None:
                if layer.feed_forward.output_dense.in_features:
                    slots[f"layer.{index}.ffn_units"] = (layer.feed_forward, "unit_mask")
                slots[f"layer.{index}.ffn"] = (layer, "ffn_block_mask")
            if layer.attention is not None or layer.feed_forward is not None:
                slots[f"layer.{index}"] = (layer, "layer_mask")
        return slots

    def set_masks(self, masks: Mapping[str, Tensor | float | None]) -> None:
        """Set (or, with None, clear) masks by name; other masks are left as they are.

        Values may be differentiable tensors (set them before every forward when sampling gates).
        Shapes must match :meth:`mask_shapes` (scalars may also be ``[1]``).
        """
        slots = self._mask_slots()
        shapes = self.mask_shapes()
        for name, value in masks.items():
            if name not in slots:
                raise ValueError(f"unknown mask {name!r}; known masks: {', '.join(slots)}")
            if value is not None:
                value = torch.as_tensor(value, dtype=torch.float32) if not torch.is_tensor(value) else value
                if value.numel() != math.prod(shapes[name]) or (shapes[name] and value.shape != shapes[name]):
                    raise ValueError(
                        f"mask {name!r} must have shape {list(shapes[name])}, got {list(value.shape)}"
                    )
            module, attribute = slots[name]
            setattr(module, attribute, value)

    def clear_masks(self) -> None:
        """Remove every mask."""
        self.set_masks(dict.fromkeys(self._mask_slots()))

    def masks(self) -> dict[str, Tensor]:
        """The masks currently set, by name."""
        current = {}
        for name, (module, attribute) in self._mask_slots().items():
            value = getattr(module, attribute)
            if value is not None:
                current[name] = value
        return current

    @torch.no_grad()
    def prune(self) -> SpeechEncoder:
        """A compact copy with the current masks folded in and zero-masked structures removed.

        The copy computes what this masked model computes (see :mod:`upstreams.pruning` for how,
        and for the one approximate case); this model is not changed.

        Returns:
            a new model in the same training/eval mode, dtype and device, with no masks set.
        """
        return self._rebuilt(*prune_state(self.config, self.state_dict(), self.masks()))

    @torch.no_grad()
    def truncate(self, num_layers: int) -> SpeechEncoder:
        """A compact copy keeping only the first ``num_layers`` transformer layers.

        Its hidden states are the first ``num_layers + 1`` of this model's. Masks must be folded
        first (:meth:`prune`); a pre-LN model keeps its final LayerNorm (``last_hidden_state``).
        """
        return self._rebuilt(*truncate_state(self.config, self.state_dict(), num_layers, masks=self.masks()))

    def _rebuilt(self, config: EncoderConfig, state: Mapping[str, Tensor]) -> SpeechEncoder:
        """A new encoder of ``config`` holding ``state`` (strictly), on this model's device and dtype and in its mode."""
        compact = SpeechEncoder(config, initialize=False)
        reference = next(self.parameters())
        compact.to(device=reference.device, dtype=reference.dtype)
        compact.load_state_dict(state, strict=True)
        compact.train(self.training)
        return compact

    # ------------------------------------------------------------------ initialisation
    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Random initialisation in the fairseq / transformers manner (normal(0, 0.02) linears)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Conv1d):
                nn.init.kaiming_normal_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm | nn.GroupNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
            elif isinstance(module, PositionalConvEmbedding | FeatureExtractor | SelfAttention):
                module.reset_parameters()
        if self.mask_embedding is not None:
            nn.init.uniform_(self.mask_embedding)

    def extra_repr(self) -> str:
        return self.config.describe()


# ---------------------------------------------------------------------- named architectures
#: Named architectures with random weights: ``ARCHITECTURES.get("hubert_base")()`` builds one;
#: ``load_upstream("arch:hubert_base")`` does the same (``upstreams.importers``).
ARCHITECTURES: Registry = Registry("architecture")


def base_config(family: str, **overrides) -> EncoderConfig:
    """The Base shape (12 layers, D=768, 12 heads, FFN 3072, 512-channel extractor, post-LN)."""
    values = dict(family=family)
    if family == "wavlm":
        values["relative_position_heads"] = 12
    return EncoderConfig(**{**values, **overrides})


def large_config(family: str, **overrides) -> EncoderConfig:
    """The Large shape (24 layers, D=1024, 16 heads, FFN 4096, layer-norm extractor, pre-LN, normalised input)."""
    values = dict(
        family=family,
        extractor_norm="layer",
        conv_bias=family == "wav2vec2",
        normalize_waveform=True,
        embed_dim=1024,
        attention_heads=[list(range(16)) for _ in range(24)],
        use_attention=[True] * 24,
        ffn_dims=[4096] * 24,
        use_ffn=[True] * 24,
        layer_norm_first=True,
        relative_position_heads=16 if family == "wavlm" else 0,
    )
    return EncoderConfig(**{**values, **overrides})


def tiny_config(family: str, layer_norm_first: bool = False, **overrides) -> EncoderConfig:
    """A small model with the real 320x extractor geometry (for tests and demos).

    4 layers, D=32, 4 heads of 8, FFN 64, 16-channel extractor. ``layer_norm_first=True`` gives the
    Large-style variant (layer-norm extractor with conv bias, pre-LN).
    """
    values = dict(
        family=family,
        conv_channels=[16] * 7,
        conv_kernels=list(BASE_CONV_KERNELS),
        conv_strides=list(BASE_CONV_STRIDES),
        conv_bias=layer_norm_first,
        extractor_norm="layer" if layer_norm_first else "group",
        embed_dim=32,
        head_dim=8,
        attention_heads=[list(range(4)) for _ in range(4)],
        use_attention=[True] * 4,
        ffn_dims=[64] * 4,
        use_ffn=[True] * 4,
        layer_norm_first=layer_norm_first,
        pos_conv_kernel=16,
        pos_conv_groups=4,
        num_buckets=32,
        max_distance=64,
        relative_position_heads=4 if family == "wavlm" else 0,
        dropout=0.0,
        attention_dropout=0.0,
        projection_dropout=0.0,
    )
    return EncoderConfig(**{**values, **overrides})


@ARCHITECTURES.register("hubert_base")
def hubert_base() -> SpeechEncoder:
    """HuBERT Base, randomly initialised."""
    return SpeechEncoder(base_config("hubert"))


@ARCHITECTURES.register("wavlm_base")
def wavlm_base() -> SpeechEncoder:
    """WavLM Base / Base+ shape (320 buckets, max distance 800), randomly initialised."""
    return SpeechEncoder(base_config("wavlm"))


@ARCHITECTURES.register("wav2vec2_base")
def wav2vec2_base() -> SpeechEncoder:
    """wav2vec 2.0 Base, randomly initialised."""
    return SpeechEncoder(base_config("wav2vec2"))


@ARCHITECTURES.register("hubert_large")
def hubert_large() -> SpeechEncoder:
    """HuBERT Large, randomly initialised."""
    return SpeechEncoder(large_config("hubert"))


@ARCHITECTURES.register("wavlm_large")
def wavlm_large() -> SpeechEncoder:
    """WavLM Large, randomly initialised."""
    return SpeechEncoder(large_config("wavlm"))


@ARCHITECTURES.register("wav2vec2_large")
def wav2vec2_large() -> SpeechEncoder:
    """wav2vec 2.0 Large (LV-60k shape: conv bias, layer-norm extractor), randomly initialised."""
    return SpeechEncoder(large_config("wav2vec2"))


@ARCHITECTURES.register("tiny_hubert")
def tiny_hubert() -> SpeechEncoder:
    return SpeechEncoder(tiny_config("hubert"))


@ARCHITECTURES.register("tiny_wavlm")
def tiny_wavlm() -> SpeechEncoder:
    return SpeechEncoder(tiny_config("wavlm"))


@ARCHITECTURES.register("tiny_wav2vec2")
def tiny_wav2vec2() -> SpeechEncoder:
    return SpeechEncoder(tiny_config("wav2vec2"))
