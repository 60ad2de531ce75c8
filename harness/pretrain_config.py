"""HuBERT pretraining's settings: :class:`PretrainConfig` and its recipes (``harness pretrain
--recipe``), torch-free so that ``harness --help`` stays fast, and written once: the trainer
(``harness.pretrain``) and the command take them from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from upstreams.config import BASE_CONV_KERNELS, BASE_CONV_STRIDES, EncoderConfig

#: The recipe of the embedded teacher, and what ``harness pretrain`` uses by default.
DEFAULT_RECIPE = "tiny"


@dataclass
class PretrainConfig:
    """Model shape, targets and optimisation of one pretraining run."""

    # model
    layers: int = 6
    embed_dim: int = 256
    heads: int = 4
    ffn_dim: int = 1024
    conv_channels: int = 128
    pos_conv_kernel: int = 64
    pos_conv_groups: int = 16
    dropout: float = 0.1
    # targets
    clusters: list[int] = field(default_factory=lambda: [100, 100])  # k per iteration
    feature_layer: int = 3  # hidden-state index of the iteration-1 model clustered for iteration 2
    kmeans_frames: int = 150_000  # frames sampled to fit k-means
    target_cmvn: bool = True  # normalise each utterance's features before k-means (fewer speaker clusters)
    warm_start: bool = True  # iteration 2 starts from iteration 1's encoder instead of from scratch
    # optimisation
    steps: list[int] = field(default_factory=lambda: [3000, 1500])  # per iteration
    batch_size: int = 8
    crop_seconds: float = 2.0
    lr: float = 5e-4
    warmup_fraction: float = 0.08
    weight_decay: float = 0.01
    grad_clip: float = 10.0
    mask_prob: float = 0.8
    mask_span: int = 10
    unmasked_weight: float = 0.0  # weight of the cross-entropy on unmasked frames (fairseq's pred_nomask_weight)
    final_dim: int = 128
    temperature: float = 0.1
    save_every: int = 100
    seed: int = 0
    storage_dtype: str = "float32"  # of the finished teacher's weights file ("float16" halves it)

    def __post_init__(self) -> None:
        if self.storage_dtype not in ("float32", "float16", "bfloat16"):
            raise ValueError(f"storage_dtype {self.storage_dtype!r}: choose float32, float16 or bfloat16")
        if not 0 <= self.feature_layer <= self.layers:
            raise ValueError(f"feature_layer {self.feature_layer} is not a hidden state of a {self.layers}-layer model (0..{self.layers})")

    def encoder_config(self) -> EncoderConfig:
        return EncoderConfig(
            family="hubert",
            conv_channels=[self.conv_channels] * 7,
            conv_kernels=list(BASE_CONV_KERNELS),
            conv_strides=list(BASE_CONV_STRIDES),
            embed_dim=self.embed_dim,
            head_dim=self.embed_dim // self.heads,
            attention_heads=[list(range(self.heads)) for _ in range(self.layers)],
            use_attention=[True] * self.layers,
            ffn_dims=[self.ffn_dim] * self.layers,
            use_ffn=[True] * self.layers,
            pos_conv_kernel=self.pos_conv_kernel,
            pos_conv_groups=self.pos_conv_groups,
            dropout=self.dropout,
            attention_dropout=self.dropout,
            projection_dropout=self.dropout,
        )


PRESETS = {
    "tiny": PretrainConfig(unmasked_weight=1.0, steps=[3000, 3000]),
    # As deep as HuBERT Base at the embedded teacher's width: 12 layers, iteration 2's targets from
    # hidden state 6 (HuBERT Base's layer 6 of 12); 10.0 M parameters, stored in float16 (19 MB).
    "base12": PretrainConfig(layers=12, unmasked_weight=1.0, feature_layer=6, steps=[3000, 3000], storage_dtype="float16"),
    "small": PretrainConfig(
        layers=8, embed_dim=384, heads=6, ffn_dim=1536, conv_channels=256, pos_conv_kernel=128,
        clusters=[100, 250], feature_layer=4, steps=[20_000, 20_000], batch_size=16, crop_seconds=4.0,
        unmasked_weight=1.0,
    ),  # fmt: skip
}
