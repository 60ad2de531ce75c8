"""Building blocks of a prunable HuBERT / WavLM / wav2vec 2.0 encoder.

Shapes use ``batch``, ``time`` (waveform samples), ``frame`` (encoder frames), ``channel`` (conv
features) and ``D`` (transformer width). Every prunable structure carries an optional float mask
attribute, set before a forward pass (usually through ``SpeechEncoder.set_masks``) and multiplied
into the activations where DPHuBERT puts its gates:

- ``ConvLayerBlock.channel_mask`` ``[out_channels]``: conv output, after the activation;
- ``SelfAttention.head_mask`` ``[num_heads]``: each head's output, before ``out_proj``;
- ``FeedForward.unit_mask`` ``[hidden]``: FFN hidden units, after the activation;
- ``EncoderLayer.attention_block_mask`` / ``ffn_block_mask`` / ``layer_mask`` (scalars): the output
  of the attention block, of the FFN block, and of both (a whole layer).

Masks may be differentiable tensors (HardConcrete samples); they are plain attributes, not
parameters or buffers, so they are never saved with the weights.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def conv_output_lengths(lengths: Tensor, kernel_size: int, stride: int) -> Tensor:
    """Valid output frames of an unpadded strided convolution; never negative. Shape ``[batch]``."""
    return torch.clamp(torch.div(lengths - kernel_size, stride, rounding_mode="floor") + 1, min=0)


def padding_mask(lengths: Tensor, max_length: int) -> Tensor:
    """``[batch, max_length]`` bool, True where a position is padding (at or beyond its length)."""
    return torch.arange(max_length, device=lengths.device)[None, :] >= lengths[:, None]


def _linear(in_features: int, out_features: int) -> nn.Linear:
    """``nn.Linear`` that may have zero inputs or outputs (a pruned block keeping only its bias)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
        return nn.Linear(in_features, out_features)


def _apply_mask(x: Tensor, mask: Tensor | None, shape: tuple[int, ...]) -> Tensor:
    return x if mask is None else x * mask.reshape(shape).to(device=x.device, dtype=x.dtype)


class ConvLayerBlock(nn.Module):
    """One convolution of the feature extractor: conv, optional normalisation, GELU, channel mask.

    Args:
        in_channels, out_channels, kernel_size, stride: the ``nn.Conv1d`` geometry (no padding).
        bias: whether the convolution has a bias.
        norm: ``"group"`` (per-channel normalisation over time, computed over valid frames only when
            lengths are given), ``"layer"`` (LayerNorm over channels at each frame) or ``None``.
        eps: normalisation epsilon.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        bias: bool,
        norm: str | None,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if norm not in (None, "group", "layer"):
            raise ValueError(f"norm must be None, 'group' or 'layer', got {norm!r}")
        self.kernel_size = kernel_size
        self.stride = stride
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, bias=bias)
        self.norm_type = norm
        self.norm: nn.Module | None = None
        if norm == "group":
            self.norm = nn.GroupNorm(out_channels, out_channels, eps=eps, affine=True)
        elif norm == "layer":
            self.norm = nn.LayerNorm(out_channels, eps=eps)
        self.channel_mask: Tensor | None = None

    def forward(self, x: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """
        Args:
            x: ``[batch, in_channels, time]``.
            lengths: valid input length of each item ``[batch]``, or None (all valid).
        Returns:
            ``[batch, out_channels, frame]`` and the valid output lengths (or None).
        """
        x = self.conv(x)
        if lengths is not None:
            lengths = conv_output_lengths(lengths, self.kernel_size, self.stride)
        if self.norm_type == "group":
            x = self._group_norm(x, lengths)
        elif self.norm_type == "layer":
            x = self.norm(x.transpose(1, 2)).transpose(1, 2)
        x = F.gelu(x)
        return _apply_mask(x, self.channel_mask, (1, -1, 1)), lengths

    def _group_norm(self, x: Tensor, lengths: Tensor | None) -> Tensor:
        if lengths is None or bool((lengths == x.shape[-1]).all()):
            return self.norm(x)
        # Statistics over each item's valid frames only, so padding never changes the result.
        valid = (~padding_mask(lengths, x.shape[-1]))[:, None, :].to(torch.float32)
        x32 = x.float()
        count = valid.sum(-1, keepdim=True).clamp(min=1.0)
        mean = (x32 * valid).sum(-1, keepdim=True) / count
        var = (((x32 - mean) * valid) ** 2).sum(-1, keepdim=True) / count
        y = (x32 - mean) * torch.rsqrt(var + self.norm.eps)
        y = y * self.norm.weight[None, :, None] + self.norm.bias[None, :, None]
        return y.to(x.dtype)


class FeatureExtractor(nn.Module):
    """Stack of :class:`ConvLayerBlock` turning waveforms into frame features.

    Args:
        conv_layers: the convolution blocks, first to last.
        output_scale: if True, a learned per-channel vector multiplies the output (pruning stores the
            soft mask values of the last conv layer there).
    """

    def __init__(self, conv_layers: nn.ModuleList, output_scale: bool = False) -> None:
        super().__init__()
        self.conv_layers = conv_layers
        out_channels = conv_layers[-1].conv.out_channels
        self.output_scale = nn.Parameter(torch.ones(out_channels)) if output_scale else None

    @torch.no_grad()
    def reset_parameters(self) -> None:
        if self.output_scale is not None:
            self.output_scale.fill_(1.0)

    def forward(self, waveforms: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """
        Args:
            waveforms: ``[batch, time]``.
            lengths: valid samples per item ``[batch]`` or None.
        Returns:
            features ``[batch, frame, channel]`` and valid frames per item ``[batch]`` (or None).
        """
        if waveforms.ndim != 2:
            raise ValueError(f"expected waveforms of shape [batch, time], got {list(waveforms.shape)}")
        x = waveforms.unsqueeze(1)
        for layer in self.conv_layers:
            x, lengths = layer(x, lengths)
        x = x.transpose(1, 2)
        if self.output_scale is not None:
            x = x * self.output_scale.to(x.dtype)
        return x, lengths


class FeatureProjection(nn.Module):
    """LayerNorm over conv features, then a linear map to the transformer width.

    Args:
        in_features: conv feature width.
        out_features: transformer width D.
        layer_norm: whether to normalise before projecting.
        phantom_channels: pruned extractor channels that still count, as zeros, in the LayerNorm
            statistics (mean and variance are taken over ``in_features + phantom_channels`` values).
            This makes removing zero-masked channels exact.
        dropout: dropout after the projection.
        eps: LayerNorm epsilon.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        layer_norm: bool = True,
        phantom_channels: int = 0,
        dropout: float = 0.0,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.layer_norm = nn.LayerNorm(in_features, eps=eps) if layer_norm else None
        self.phantom_channels = phantom_channels
        self.projection = nn.Linear(in_features, out_features)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """``[batch, frame, in_features]`` -> ``[batch, frame, out_features]``."""
        if self.layer_norm is not None:
            x = self._normalize(x)
        return self.dropout(self.projection(x))

    def _normalize(self, x: Tensor) -> Tensor:
        if self.phantom_channels == 0:
            return self.layer_norm(x)
        x32 = x.float()
        total = x.shape[-1] + self.phantom_channels
        mean = x32.sum(-1, keepdim=True) / total
        # each phantom channel is a zero, contributing mean**2 to the sum of squared deviations
        var = (((x32 - mean) ** 2).sum(-1, keepdim=True) + self.phantom_channels * mean**2) / total
        y = (x32 - mean) * torch.rsqrt(var + self.layer_norm.eps)
        return (y * self.layer_norm.weight + self.layer_norm.bias).to(x.dtype)


class PositionalConvEmbedding(nn.Module):
    """Grouped convolution over frames with weight normalisation (over all dims but the kernel's), then GELU.

    Args:
        embed_dim: width D.
        kernel_size: frames seen (128); an even kernel drops the last output frame to keep the length.
        groups: convolution groups (16).
    """

    def __init__(self, embed_dim: int, kernel_size: int, groups: int) -> None:
        super().__init__()
        if embed_dim % groups:
            raise ValueError(f"embed_dim={embed_dim} is not divisible by groups={groups}")
        self.embed_dim = embed_dim
        self.kernel_size = kernel_size
        self.groups = groups
        self.weight_g = nn.Parameter(torch.ones(1, 1, kernel_size))
        self.weight_v = nn.Parameter(torch.empty(embed_dim, embed_dim // groups, kernel_size))
        self.bias = nn.Parameter(torch.zeros(embed_dim))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        nn.init.normal_(
            self.weight_v, std=2 * math.sqrt(1 / (self.kernel_size * self.embed_dim // self.groups))
        )
        self.weight_g.copy_(self.weight_v.norm(dim=(0, 1), keepdim=True))
        self.bias.zero_()

    def weight(self) -> Tensor:
        return self.weight_v * (self.weight_g / self.weight_v.norm(dim=(0, 1), keepdim=True))

    def forward(self, x: Tensor) -> Tensor:
        """``[batch, frame, D]`` -> ``[batch, frame, D]``."""
        y = F.conv1d(
            x.transpose(1, 2), self.weight(), self.bias, padding=self.kernel_size // 2, groups=self.groups
        )
        if self.kernel_size % 2 == 0:
            y = y[..., :-1]
        return F.gelu(y).transpose(1, 2)


class RelativePositionBias(nn.Module):
    """WavLM's bucketed relative position bias table, shared by all layers.

    Args:
        num_buckets: buckets (320): half for each direction, half of those exact, the rest log-spaced.
        max_distance: distance (800 frames) beyond which offsets share the last bucket.
        num_heads: columns of the table (the original number of heads).
    """

    def __init__(self, num_buckets: int, max_distance: int, num_heads: int) -> None:
        super().__init__()
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.embedding = nn.Embedding(num_buckets, num_heads)

    def buckets(self, num_frames: int) -> Tensor:
        """``[frame, frame]`` bucket index of each (query, key) pair."""
        positions = torch.arange(num_frames, device=self.embedding.weight.device)
        relative = positions[None, :] - positions[:, None]  # key - query
        half = self.num_buckets // 2
        buckets = (relative > 0).long() * half
        distance = relative.abs()
        max_exact = half // 2
        scaled = torch.log(distance.clamp(min=1).float() / max_exact) / math.log(
            self.max_distance / max_exact
        )
        far = (max_exact + scaled * (half - max_exact)).long().clamp(max=half - 1)
        return buckets + torch.where(distance < max_exact, distance, far)

    def forward(self, num_frames: int) -> Tensor:
        """``[num_heads, frame, frame]`` bias for every original head."""
        return self.embedding(self.buckets(num_frames)).permute(2, 0, 1)


class SelfAttention(nn.Module):
    """Multi-head self-attention (``scaled_dot_product_attention``) with maskable heads.

    Args:
        embed_dim: width D.
        head_ids: original indices of the heads this module holds (their count is the number of heads;
            WavLM uses the indices to select gate inputs and relative position biases).
        head_dim: width of one head (64).
        dropout: attention-weight dropout (training only).
        gated_relative_position: WavLM's gate on the relative position bias (applied when a bias is
            given; a WavLM whose table was pruned away attends without one, as DPHuBERT's code does).

    A module with no heads is "bias only": its output is ``out_proj.bias`` at every frame.
    """

    def __init__(
        self,
        embed_dim: int,
        head_ids: list[int],
        head_dim: int,
        dropout: float = 0.0,
        gated_relative_position: bool = False,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = len(head_ids)
        self.head_dim = head_dim
        self.dropout = dropout
        self.head_id_list = list(head_ids)
        self.register_buffer("head_ids", torch.tensor(head_ids, dtype=torch.long), persistent=False)
        width = self.num_heads * head_dim
        self.q_proj = _linear(embed_dim, width)
        self.k_proj = _linear(embed_dim, width)
        self.v_proj = _linear(embed_dim, width)
        self.out_proj = _linear(width, embed_dim)
        self.gated_relative_position = gated_relative_position
        if gated_relative_position and self.num_heads:
            self.gru_rel_pos_linear = nn.Linear(head_dim, 8)
            self.gru_rel_pos_const = nn.Parameter(torch.ones(self.num_heads))
        self.head_mask: Tensor | None = None

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Only the gate constant; the linear layers are initialised by their owner."""
        if hasattr(self, "gru_rel_pos_const"):
            self.gru_rel_pos_const.fill_(1.0)

    def forward(
        self, x: Tensor, key_padding_mask: Tensor | None = None, position_bias: Tensor | None = None
    ) -> Tensor:
        """
        Args:
            x: ``[batch, frame, D]``.
            key_padding_mask: ``[batch, frame]`` bool, True at padded frames (never attended to).
            position_bias: WavLM bias for every original head ``[heads_total, frame, frame]``.
        Returns:
            ``[batch, frame, D]``.
        """
        if x.ndim != 3 or x.shape[-1] != self.embed_dim:
            raise ValueError(f"expected [batch, frame, {self.embed_dim}] input, got {list(x.shape)}")
        batch, frames, _ = x.shape
        if self.num_heads == 0:
            # a new tensor, not an expanded view of the bias: a view of a parameter made under no_grad
            # has requires_grad but no grad_fn, which torch.utils.flop_counter's module hooks reject
            return torch.zeros_like(x) + self.out_proj.bias.to(x.dtype)
        shape = (batch, frames, self.num_heads, self.head_dim)
        q = self.q_proj(x).view(shape).transpose(1, 2)  # [batch, head, frame, head_dim]
        k = self.k_proj(x).view(shape).transpose(1, 2)
        v = self.v_proj(x).view(shape).transpose(1, 2)

        attn_mask: Tensor | None = None
        if self.gated_relative_position and position_bias is not None:  # None: a WavLM without the table
            attn_mask = self._gated_bias(x, position_bias)
        if key_padding_mask is not None:
            padded = key_padding_mask[:, None, None, :]
            attn_mask = ~padded if attn_mask is None else attn_mask.masked_fill(padded, float("-inf"))
        if attn_mask is not None and attn_mask.is_floating_point():
            attn_mask = attn_mask.to(q.dtype)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        out = _apply_mask(out, self.head_mask, (1, -1, 1, 1))
        out = out.transpose(1, 2).reshape(batch, frames, self.num_heads * self.head_dim)
        return self.out_proj(out)

    def _gated_bias(self, x: Tensor, position_bias: Tensor) -> Tensor:
        """WavLM's gate ``a * (b * const - 1) + 2`` (``a``, ``b`` sigmoids of the head's input slice),
        one scalar per head and query frame, scaling that head's position bias."""
        batch, frames, _ = x.shape
        gate_input = x.view(batch, frames, -1, self.head_dim)[:, :, self.head_ids].transpose(1, 2)
        logits = self.gru_rel_pos_linear(gate_input).view(batch, self.num_heads, frames, 2, 4).sum(-1)
        gate_a, gate_b = torch.sigmoid(logits).chunk(2, dim=-1)  # [batch, head, frame, 1]
        const = self.gru_rel_pos_const.view(1, -1, 1, 1)
        gate = gate_a * (gate_b * const - 1.0) + 2.0
        return gate * position_bias[self.head_ids].unsqueeze(0)  # [batch, head, frame, frame]


class FeedForward(nn.Module):
    """Position-wise FFN: Linear, GELU, maskable hidden units, Linear.

    Args:
        embed_dim: width D.
        hidden_dim: intermediate units (3072 Base); 0 leaves only the output bias.
        activation_dropout: dropout on the hidden units.
        dropout: dropout on the output.
    """

    def __init__(
        self, embed_dim: int, hidden_dim: int, activation_dropout: float = 0.0, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.intermediate_dense = _linear(embed_dim, hidden_dim)
        self.intermediate_dropout = nn.Dropout(activation_dropout)
        self.output_dense = _linear(hidden_dim, embed_dim)
        self.output_dropout = nn.Dropout(dropout)
        self.unit_mask: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        """``[batch, frame, D]`` -> ``[batch, frame, D]``."""
        h = self.intermediate_dropout(F.gelu(self.intermediate_dense(x)))
        h = _apply_mask(h, self.unit_mask, (-1,))
        return self.output_dropout(self.output_dense(h))


class EncoderLayer(nn.Module):
    """Transformer layer; either block may be absent (pruned away).

    Args:
        attention: a :class:`SelfAttention` or None.
        feed_forward: a :class:`FeedForward` or None.
        embed_dim: width D.
        layer_norm_first: pre-LN (``x + attn(LN(x))``, ``x + ffn(LN(x))``) instead of post-LN
            (``LN(x + attn(x))``, ``LN(x + ffn(x))``). Post-LN layers keep both LayerNorms even without
            blocks; pre-LN layers have a LayerNorm only in front of an existing block.
        dropout: dropout on the attention output.
        eps: LayerNorm epsilon.
    """

    def __init__(
        self,
        attention: SelfAttention | None,
        feed_forward: FeedForward | None,
        embed_dim: int,
        layer_norm_first: bool,
        dropout: float = 0.0,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.attention = attention
        self.feed_forward = feed_forward
        self.layer_norm_first = layer_norm_first
        self.dropout = nn.Dropout(dropout)
        keep_first = attention is not None or not layer_norm_first
        keep_final = feed_forward is not None or not layer_norm_first
        self.layer_norm = nn.LayerNorm(embed_dim, eps=eps) if keep_first else None
        self.final_layer_norm = nn.LayerNorm(embed_dim, eps=eps) if keep_final else None
        self.attention_block_mask: Tensor | None = None
        self.ffn_block_mask: Tensor | None = None
        self.layer_mask: Tensor | None = None

    def _scale(self, x: Tensor, block_mask: Tensor | None) -> Tensor:
        x = _apply_mask(x, block_mask, ())
        return _apply_mask(x, self.layer_mask, ())

    def forward(
        self, x: Tensor, key_padding_mask: Tensor | None = None, position_bias: Tensor | None = None
    ) -> Tensor:
        """``[batch, frame, D]`` -> ``[batch, frame, D]``; see :class:`SelfAttention` for the masks."""
        if self.layer_norm_first:
            if self.attention is not None:
                attended = self.attention(self.layer_norm(x), key_padding_mask, position_bias)
                x = x + self._scale(self.dropout(attended), self.attention_block_mask)
            if self.feed_forward is not None:
                x = x + self._scale(self.feed_forward(self.final_layer_norm(x)), self.ffn_block_mask)
            return x
        if self.attention is not None:
            attended = self.attention(x, key_padding_mask, position_bias)
            x = x + self._scale(self.dropout(attended), self.attention_block_mask)
        x = self.layer_norm(x)
        if self.feed_forward is not None:
            x = x + self._scale(self.feed_forward(x), self.ffn_block_mask)
        return self.final_layer_norm(x)


class Transformer(nn.Module):
    """Positional convolution, then the encoder layers; returns every layer's output.

    Args:
        pos_conv: the :class:`PositionalConvEmbedding`.
        layers: the :class:`EncoderLayer` stack.
        embed_dim: width D.
        layer_norm_first: pre-LN model: ``layer_norm`` is the final norm (see
            ``SpeechEncoder.last_hidden_state``); post-LN: it is applied after the positional conv.
        relative_position: WavLM's :class:`RelativePositionBias`, or None.
        dropout: dropout after the positional embedding.
        layer_drop: training-time probability to skip a layer (its output is then its input).
        eps: LayerNorm epsilon.
    """

    def __init__(
        self,
        pos_conv: PositionalConvEmbedding,
        layers: nn.ModuleList,
        embed_dim: int,
        layer_norm_first: bool,
        relative_position: RelativePositionBias | None = None,
        dropout: float = 0.0,
        layer_drop: float = 0.0,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.pos_conv = pos_conv
        self.layer_norm = nn.LayerNorm(embed_dim, eps=eps)
        self.layer_norm_first = layer_norm_first
        self.relative_position = relative_position
        self.dropout = nn.Dropout(dropout)
        self.layer_drop = layer_drop
        self.layers = layers

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> list[Tensor]:
        """
        Args:
            x: ``[batch, frame, D]``, zero at padded frames.
            key_padding_mask: ``[batch, frame]`` bool, True at padded frames.
        Returns:
            one ``[batch, frame, D]`` output per layer.
        """
        x = x + self.pos_conv(x)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        x = self.dropout(x)
        position_bias = self.relative_position(x.shape[1]) if self.relative_position is not None else None
        outputs = []
        for layer in self.layers:
            skip = self.training and self.layer_drop > 0 and torch.rand(()).item() < self.layer_drop
            if not skip:
                x = layer(x, key_padding_mask, position_bias)
            outputs.append(x)
        return outputs
