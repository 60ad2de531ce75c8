"""prune() folds masks exactly; truncate() keeps a prefix of layers; parameter formulas stay exact."""

from __future__ import annotations

import logging

import pytest
import torch

from upstreams.config import expected_num_params
from upstreams.model import SpeechEncoder, tiny_config

FAMILIES = ["hubert", "wavlm", "wav2vec2"]


def tiny_model(family: str, layer_norm_first: bool = False, seed: int = 0) -> SpeechEncoder:
    torch.manual_seed(seed)
    config = tiny_config(family, layer_norm_first=layer_norm_first, normalize_waveform=layer_norm_first)
    model = SpeechEncoder(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model


def random_masks(
    model: SpeechEncoder, seed: int, conv_zeros: bool, special_cases: bool = True
) -> dict[str, torch.Tensor]:
    """Soft values in (0.2, 1.2) with about a third exactly zero, plus (optionally) every special case."""
    generator = torch.Generator().manual_seed(seed)
    masks = {}
    for name, shape in model.mask_shapes().items():
        value = 0.2 + torch.rand(shape, generator=generator)
        if shape and (conv_zeros or not name.startswith("conv")):
            value[torch.rand(shape, generator=generator) < 0.35] = 0.0
            value[0] = 0.9  # never remove a whole conv layer
        masks[name] = value
    if not special_cases:
        return masks
    masks["layer.0.heads"] = torch.zeros(model.mask_shapes()["layer.0.heads"])  # bias-only attention
    masks["layer.1.attention"] = torch.tensor(0.0)  # attention block removed
    masks["layer.2.ffn_units"] = torch.zeros(model.mask_shapes()["layer.2.ffn_units"])  # bias-only FFN
    masks["layer.3.ffn"] = torch.tensor(0.0)  # FFN block removed
    return masks


def kept_counts(masks: dict[str, torch.Tensor]) -> dict[str, float]:
    return {
        name: float((value != 0).sum()) if value.ndim else float(value != 0) for name, value in masks.items()
    }


def assert_same_states(reference, candidate, frames: int) -> None:
    assert len(reference) == len(candidate)
    for expected, actual in zip(reference, candidate, strict=True):
        torch.testing.assert_close(actual[:, :frames], expected[:, :frames], atol=1e-4, rtol=0)


@pytest.mark.parametrize("layer_norm_first", [False, True], ids=["base_style", "large_style"])
@pytest.mark.parametrize("family", FAMILIES)
def test_pruned_model_equals_masked_model(family, layer_norm_first):
    model = tiny_model(family, layer_norm_first)
    # a layer-norm extractor's channel LayerNorm cannot lose channels exactly: soft conv masks only there
    masks = random_masks(model, seed=1, conv_zeros=not layer_norm_first)
    model.set_masks(masks)
    waves = torch.randn(2, 12000)
    lengths = torch.tensor([12000, 7000])
    with torch.no_grad():
        masked, frame_lengths = model(waves, lengths)
        compact = model.prune()
        pruned, _ = compact(waves, lengths)
    assert compact.masks() == {} and not compact.training
    assert_same_states(masked, pruned, int(frame_lengths.min()))
    config = compact.config
    assert config.num_heads[0] == 0 and config.use_attention[0]
    assert not config.use_attention[1] and config.ffn_dims[2] == 0 and config.use_ffn[2]
    assert not config.use_ffn[3]
    assert (
        compact.num_params() == config.num_params() == expected_num_params(model.config, kept_counts(masks))
    )
    assert compact.num_params() < model.num_params()


def test_pruning_twice_stays_exact_and_accumulates_phantom_channels():
    model = tiny_model("wavlm")
    model.set_masks(random_masks(model, seed=2, conv_zeros=True))
    once = model.prune()
    once.set_masks(random_masks(once, seed=3, conv_zeros=True, special_cases=False))
    waves = torch.randn(1, 9000)
    with torch.no_grad():
        masked, _ = once(waves)
        twice = once.prune()
        pruned, _ = twice(waves)
    assert_same_states(masked, pruned, masked[0].shape[1])
    assert twice.config.extractor_phantom_channels > once.config.extractor_phantom_channels > 0
    assert twice.config.extractor_output_scale
    assert model.config.conv_channels[-1] == (
        twice.config.conv_channels[-1] + twice.config.extractor_phantom_channels
    )


@pytest.mark.parametrize("layer_norm_first", [False, True])
def test_whole_layer_mask(layer_norm_first):
    model = tiny_model("hubert", layer_norm_first)
    model.set_masks({"layer.1": torch.tensor(0.0), "layer.2": torch.tensor(0.4)})
    waves = torch.randn(1, 8000)
    with torch.no_grad():
        masked, _ = model(waves)
        compact = model.prune()
        pruned, _ = compact(waves)
    assert_same_states(masked, pruned, masked[0].shape[1])
    assert not compact.config.use_attention[1] and not compact.config.use_ffn[1]
    assert len(pruned) == model.config.num_layers + 1  # pruning never changes the number of hidden states
    if layer_norm_first:  # a pre-LN layer without blocks is the identity and has no parameters
        torch.testing.assert_close(pruned[2], pruned[1])
        assert sum(p.numel() for p in compact.transformer.layers[1].parameters()) == 0
    else:  # a post-LN layer keeps its two LayerNorms
        assert (
            sum(p.numel() for p in compact.transformer.layers[1].parameters()) == 4 * model.config.embed_dim
        )


def test_prune_leaves_the_original_model_untouched():
    model = tiny_model("hubert")
    waves = torch.randn(1, 6000)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    model.set_masks(random_masks(model, seed=4, conv_zeros=True))
    model.prune()
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
    model.clear_masks()
    states, _ = model(waves)
    assert states[-1].shape[-1] == model.config.embed_dim


def test_expected_num_params_is_differentiable():
    model = tiny_model("wavlm")
    expected_counts = {}
    for name, shape in model.mask_shapes().items():
        size = float(shape[0]) if shape else 1.0
        expected_counts[name] = torch.tensor(size * 0.5, requires_grad=True)
    total = expected_num_params(model.config, expected_counts)
    assert 0 < total.item() < model.num_params()
    total.backward()
    assert all(value.grad is not None and value.grad > 0 for value in expected_counts.values())
    with pytest.raises(ValueError, match="unknown structure"):
        expected_num_params(model.config, {"layer.7.heads": 1.0})


def test_removing_channels_before_a_channel_layer_norm_warns(caplog):
    model = tiny_model("hubert", layer_norm_first=True)
    mask = torch.ones(16)
    mask[:4] = 0.0
    model.set_masks({"conv.2.channels": mask})
    with caplog.at_level(logging.WARNING, logger="upstreams.pruning"):
        compact = model.prune()
    assert "approximates" in caplog.text
    assert compact.config.conv_channels[2] == 12


def test_prune_refuses_to_remove_every_channel_of_a_conv_layer():
    model = tiny_model("hubert")
    model.set_masks({"conv.3.channels": torch.zeros(16)})
    with pytest.raises(ValueError, match="conv layer 3"):
        model.prune()


@pytest.mark.parametrize("layer_norm_first", [False, True])
def test_truncate_keeps_the_first_layers(layer_norm_first):
    model = tiny_model("wavlm", layer_norm_first)
    waves = torch.randn(2, 8000)
    lengths = torch.tensor([8000, 6000])
    with torch.no_grad():
        full, _ = model(waves, lengths)
        short = model.truncate(2)
        truncated, _ = short(waves, lengths)
    assert short.config.num_layers == 2 and len(truncated) == 3
    assert_same_states(full[:3], truncated, 18)
    assert short.num_params() == short.config.num_params() < model.num_params()
    if layer_norm_first:  # the final LayerNorm moves to the new last layer
        torch.testing.assert_close(short.last_hidden_state(truncated), model.transformer.layer_norm(full[2]))
    with pytest.raises(ValueError, match="between 1 and 4"):
        model.truncate(5)
    model.set_masks({"layer.0": torch.tensor(0.5)})
    with pytest.raises(ValueError, match="prune"):
        model.truncate(2)
