"""Checkpoint import (transformers, torchaudio, fairseq, DPHuBERT), compact checkpoints, safe loading.

Reference models have random weights and small shapes; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re

import pytest
import torch
import torchaudio
from transformers import (
    HubertConfig,
    HubertModel,
    Wav2Vec2Config,
    Wav2Vec2Model,
    WavLMConfig,
    WavLMModel,
)

from upstreams import UnsafeCheckpointError, load_upstream
from upstreams.checkpoint import (
    is_compact_checkpoint,
    is_complete_checkpoint,
    load_compact,
    read_compact_config,
    save_compact,
)
from upstreams.cost import measure_cost, record_cost
from upstreams.importers import from_torchaudio_model, parse_conv_layers
from upstreams.model import SpeechEncoder, tiny_config

HF_MODELS = {
    "hubert": (HubertConfig, HubertModel),
    "wavlm": (WavLMConfig, WavLMModel),
    "wav2vec2": (Wav2Vec2Config, Wav2Vec2Model),
}
STYLES = {"base_style": False, "large_style": True}  # Large: layer-norm extractor with conv bias, pre-LN


def perturb(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Move every weight off its initial value (LayerNorms at 1, biases at 0 would hide mapping bugs)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return module.eval()


def small_hf_model(family: str, stable: bool, **shape):
    config_class, model_class = HF_MODELS[family]
    values = dict(
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=48,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        num_buckets=32,
        max_bucket_distance=64,
        do_stable_layer_norm=stable,
        feat_extract_norm="layer" if stable else "group",
        conv_bias=stable,
    )
    return perturb(model_class(config_class(**{**values, **shape})))


def hf_reference(model, waves, attention_mask=None):
    """transformers' hidden states, with index 0 replaced by the feature projection output."""
    captured = {}
    hook = model.feature_projection.register_forward_hook(
        lambda m, i, o: captured.update(out=o[0] if isinstance(o, tuple) else o)
    )
    with torch.no_grad():
        output = model(waves, attention_mask=attention_mask, output_hidden_states=True)
    hook.remove()
    return [captured["out"], *output.hidden_states[1:]], output.last_hidden_state


def assert_states_close(actual, expected, frames=None, atol=1e-4):
    assert len(actual) == len(expected)
    for index, (ours, theirs) in enumerate(zip(actual, expected, strict=True)):
        frames_ = frames or ours.shape[1]
        torch.testing.assert_close(
            ours[:, :frames_], theirs[:, :frames_], atol=atol, rtol=0, msg=f"hidden state {index}"
        )


# ---------------------------------------------------------------------- transformers
@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("family", list(HF_MODELS))
def test_transformers_parity(family, style, tmp_path):
    reference = small_hf_model(family, STYLES[style])
    reference.save_pretrained(tmp_path)
    model = load_upstream(tmp_path)
    assert model.config.family == family and model.config.layer_norm_first == STYLES[style]
    assert model.num_params() == sum(p.numel() for p in reference.parameters())
    waves = torch.randn(2, 12000)
    expected, expected_last = hf_reference(reference, waves)
    with torch.no_grad():
        states, _ = model(waves)
    assert_states_close(states, expected)
    torch.testing.assert_close(model.last_hidden_state(states), expected_last, atol=1e-4, rtol=0)


@pytest.mark.parametrize("family", ["hubert", "wavlm"])
def test_transformers_parity_with_padding(family, tmp_path):
    """With a layer-norm extractor, transformers' attention mask and our lengths agree on valid frames."""
    reference = small_hf_model(family, stable=True)
    reference.save_pretrained(tmp_path)
    model = load_upstream(tmp_path)
    waves = torch.randn(2, 12000)
    waves[1, 7000:] = 0.0
    attention_mask = torch.ones(2, 12000, dtype=torch.long)
    attention_mask[1, 7000:] = 0
    expected, _ = hf_reference(reference, waves, attention_mask)
    with torch.no_grad():
        states, frame_lengths = model(waves, torch.tensor([12000, 7000]))
    for index in range(2):
        valid = int(frame_lengths[index])
        assert_states_close(
            [s[index : index + 1, :valid] for s in states], [s[index : index + 1, :valid] for s in expected]
        )


def test_transformers_preprocessor_sets_waveform_normalisation(tmp_path):
    small_hf_model("wav2vec2", stable=True).save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"do_normalize": True}))
    assert load_upstream(tmp_path).config.normalize_waveform


@pytest.mark.slow
@pytest.mark.parametrize("family", list(HF_MODELS))
def test_transformers_parity_base_shape(family, tmp_path):
    config_class, model_class = HF_MODELS[family]
    reference = perturb(model_class(config_class()))
    reference.save_pretrained(tmp_path)
    model = load_upstream(tmp_path)
    assert model.config.num_layers == 12 and model.config.embed_dim == 768
    waves = torch.randn(1, 32000)
    expected, _ = hf_reference(reference, waves)
    with torch.no_grad():
        states, _ = model(waves)
    assert_states_close(states, expected)


# ---------------------------------------------------------------------- torchaudio
TORCHAUDIO_SMALL = dict(
    extractor_conv_layer_config=[(16, 10, 5)] + [(16, 3, 2)] * 4 + [(16, 2, 2)] * 2,
    extractor_conv_bias=False,
    encoder_embed_dim=32,
    encoder_projection_dropout=0.0,
    encoder_pos_conv_kernel=16,
    encoder_pos_conv_groups=4,
    encoder_num_layers=3,
    encoder_num_heads=4,
    encoder_attention_dropout=0.0,
    encoder_ff_interm_features=48,
    encoder_ff_interm_dropout=0.0,
    encoder_dropout=0.0,
    encoder_layer_drop=0.0,
    aux_num_out=None,
)


def small_torchaudio_model(family: str, layer_norm_first: bool):
    params = dict(
        TORCHAUDIO_SMALL,
        encoder_layer_norm_first=layer_norm_first,
        extractor_mode="layer_norm" if layer_norm_first else "group_norm",
    )
    if family == "wavlm":
        return perturb(
            torchaudio.models.wavlm_model(**params, encoder_num_buckets=32, encoder_max_distance=64)
        ), params
    return perturb(torchaudio.models.wav2vec2_model(**params)), params


def torchaudio_reference(model, waves):
    captured = {}
    hook = model.encoder.feature_projection.register_forward_hook(lambda m, i, o: captured.update(out=o))
    with torch.no_grad():
        layers, _ = model.extract_features(waves)
    hook.remove()
    return [captured["out"], *layers]


@pytest.mark.parametrize("layer_norm_first", [False, True])
@pytest.mark.parametrize("family", ["hubert", "wavlm"])
def test_torchaudio_parity(family, layer_norm_first):
    reference, _ = small_torchaudio_model(family, layer_norm_first)
    model = from_torchaudio_model(reference, family)
    waves = torch.randn(2, 10000)
    with torch.no_grad():
        states, _ = model(waves)
    assert_states_close(states, torchaudio_reference(reference, waves))


@pytest.mark.slow
@pytest.mark.parametrize("family", ["hubert", "wavlm"])
def test_torchaudio_base_models(family):
    reference = perturb(getattr(torchaudio.models, f"{family}_base")())
    model = from_torchaudio_model(reference, family)
    waves = torch.randn(1, 16000)
    with torch.no_grad():
        states, _ = model(waves)
    assert_states_close(states, torchaudio_reference(reference, waves))


# ---------------------------------------------------------------------- fairseq layouts
def to_fairseq_layout(hf_state: dict) -> dict:
    """Rename transformers weights into fairseq's (and the original WavLM's) parameter names."""
    rules = [
        (r"^feature_extractor\.conv_layers\.(\d+)\.conv\.", r"feature_extractor.conv_layers.\1.0."),
        (r"^feature_projection\.layer_norm\.", "layer_norm."),
        (r"^feature_projection\.projection\.", "post_extract_proj."),
        (r"^masked_spec_embed$", "mask_emb"),
        (
            r"^encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original0$",
            "encoder.pos_conv.0.weight_g",
        ),
        (
            r"^encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original1$",
            "encoder.pos_conv.0.weight_v",
        ),
        (r"^encoder\.pos_conv_embed\.conv\.bias$", "encoder.pos_conv.0.bias"),
        (r"\.attention\.rel_attn_embed\.", ".self_attn.relative_attention_bias."),
        (r"\.attention\.gru_rel_pos_linear\.", ".self_attn.grep_linear."),
        (r"\.attention\.gru_rel_pos_const$", ".self_attn.grep_a"),
        (r"\.attention\.", ".self_attn."),
        (r"(layers\.\d+)\.layer_norm\.", r"\1.self_attn_layer_norm."),
        (r"\.feed_forward\.intermediate_dense\.", ".fc1."),
        (r"\.feed_forward\.output_dense\.", ".fc2."),
    ]
    # fairseq's group norm sits at index 2 of a conv block; its layer norm at 1 of a sub-sequence there
    norm_position = "2.1." if "feature_extractor.conv_layers.1.layer_norm.weight" in hf_state else "2."
    state = {}
    for key, value in hf_state.items():
        norm = re.match(r"^feature_extractor\.conv_layers\.(\d+)\.layer_norm\.(\w+)$", key)
        if norm:
            state[f"feature_extractor.conv_layers.{norm.group(1)}.{norm_position}{norm.group(2)}"] = value
            continue
        for pattern, replacement in rules:
            key = re.sub(pattern, replacement, key)
        state[key] = value
    return state


def fairseq_model_cfg(family: str, stable: bool) -> dict:
    return {
        "extractor_mode": "layer_norm" if stable else "default",
        "conv_feature_layers": "[(16, 10, 5)] + [(16, 3, 2)] * 4 + [(16, 2, 2)] * 2",
        "conv_bias": stable,
        "encoder_embed_dim": 32,
        "encoder_layers": 3,
        "encoder_attention_heads": 4,
        "encoder_ffn_embed_dim": 48,
        "layer_norm_first": stable,
        "conv_pos": 16,
        "conv_pos_groups": 4,
        "dropout": 0.0,
        "attention_dropout": 0.0,
        **(
            {"relative_position_embedding": True, "num_buckets": 32, "max_distance": 64, "gru_rel_pos": True}
            if family == "wavlm"
            else {}
        ),
    }


@pytest.mark.parametrize(
    "family,stable,layout",
    [
        ("hubert", False, "cfg"),
        ("hubert", True, "s3prl"),
        ("wav2vec2", False, "args"),
        ("wav2vec2", True, "cfg"),
        ("wavlm", False, "wavlm"),
        ("wavlm", True, "wavlm"),
    ],
)
def test_fairseq_checkpoint_parity(family, stable, layout, tmp_path):
    reference = small_hf_model(family, stable)
    state = to_fairseq_layout(reference.state_dict())
    state["final_proj.weight"] = torch.randn(8, 32)  # pretraining heads are ignored
    if family == "hubert":
        state["label_embs_concat"] = torch.randn(5, 8)
    model_cfg = fairseq_model_cfg(family, stable)
    if layout == "cfg":
        checkpoint = {
            "cfg": {"model": {"_name": family, **model_cfg}, "task": {"normalize": False}},
            "model": state,
        }
    elif layout == "args":
        checkpoint = {"args": argparse.Namespace(arch=f"{family}_base", **model_cfg), "model": state}
    elif layout == "s3prl":
        checkpoint = {
            "task_cfg": {"normalize": False},
            "model_cfg": {"_name": family, **model_cfg},
            "model_weight": state,
        }
    else:
        checkpoint = {"cfg": model_cfg, "model": state}
    path = tmp_path / "checkpoint.pt"
    torch.save(checkpoint, path)
    model = load_upstream(path)
    assert model.config.family == family and model.config.mask_embedding
    waves = torch.randn(2, 10000)
    expected, _ = hf_reference(reference, waves)
    with torch.no_grad():
        states, _ = model(waves)
    assert_states_close(states, expected)


def test_conv_layer_spec_is_parsed_without_eval():
    assert parse_conv_layers("[(512, 10, 5)] + [(512, 3, 2)] * 2") == [(512, 10, 5), (512, 3, 2), (512, 3, 2)]
    with pytest.raises(ValueError, match="unsupported"):
        parse_conv_layers("__import__('os').system('echo hacked')")


# ---------------------------------------------------------------------- DPHuBERT
def dphubert_state(reference, family: str) -> dict:
    """torchaudio weights in DPHuBERT's layout: separate q/k/v (also for WavLM), old weight-norm names."""
    state = {}
    for key, value in reference.state_dict().items():
        key = key.replace("parametrizations.weight.original0", "weight_g").replace(
            "parametrizations.weight.original1", "weight_v"
        )
        if key.endswith("attention.attention.in_proj_weight") or key.endswith(
            "attention.attention.in_proj_bias"
        ):
            base, kind = key.rsplit(".attention.in_proj_", 1)
            for name, chunk in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3), strict=True):
                state[f"{base}.{name}.{kind}"] = chunk
            continue
        state[key.replace("attention.attention.out_proj", "attention.out_proj")] = value
    return state


def pruned_dphubert_file(family: str, kept_heads: list[list[int]], path, without_position_bias: bool = False):
    """A DPHuBERT checkpoint at ``path`` with pruned conv channels, FFN units and heads (a layer with
    none loses its attention block), and the unpruned model masked the same way. With
    ``without_position_bias`` the reference's relative position table is zero, so the masked model
    attends without a bias, as DPHuBERT's code runs a WavLM whose layer-0 attention (holding the
    table) is gone."""
    reference, params = small_torchaudio_model(family, layer_norm_first=False)
    if without_position_bias:
        with torch.no_grad():
            reference.encoder.transformer.layers[0].attention.rel_attn_embed.weight.zero_()
    unpruned = from_torchaudio_model(reference, family)
    state = dphubert_state(reference, family)
    generator = torch.Generator().manual_seed(0)
    masks = {}
    keep_channels = torch.tensor([c for c in range(16) if c % 3])  # conv layer 2 loses channels 0, 3, 6, ...
    masks["conv.2.channels"] = torch.zeros(16).index_fill_(0, keep_channels, 1.0)
    prefix = "feature_extractor.conv_layers"
    for name in ("2.conv.weight",):
        state[f"{prefix}.{name}"] = state[f"{prefix}.{name}"][keep_channels]
    state[f"{prefix}.3.conv.weight"] = state[f"{prefix}.3.conv.weight"][:, keep_channels]
    dummy = 0.5 + torch.rand(16, generator=generator)  # DPHuBERT's soft mask of the last conv layer
    state["feature_extractor.dummy_weight"] = dummy
    masks["conv.6.channels"] = dummy
    kept_units = [torch.arange(0, 48, 2), torch.arange(48), torch.arange(10, 40)]
    for layer in range(3):
        attention = f"encoder.transformer.layers.{layer}.attention"
        if not kept_heads[layer]:  # DPHuBERT drops the block; the table with it only in the official layer 0
            table = "rel_attn_embed" if layer else "no key has this name"
            for key in [k for k in state if k.startswith(attention + ".") and table not in k]:
                del state[key]
            masks[f"layer.{layer}.attention"] = torch.tensor(0.0)
        else:
            rows = torch.cat([torch.arange(h * 8, h * 8 + 8) for h in kept_heads[layer]])
            for name in ("q_proj", "k_proj", "v_proj"):
                for kind in ("weight", "bias"):
                    state[f"{attention}.{name}.{kind}"] = state[f"{attention}.{name}.{kind}"][rows]
            state[f"{attention}.out_proj.weight"] = state[f"{attention}.out_proj.weight"][:, rows]
            masks[f"layer.{layer}.heads"] = torch.zeros(4).index_fill_(
                0, torch.tensor(kept_heads[layer]), 1.0
            )
        ffn = f"encoder.transformer.layers.{layer}.feed_forward"
        units = kept_units[layer]
        state[f"{ffn}.intermediate_dense.weight"] = state[f"{ffn}.intermediate_dense.weight"][units]
        state[f"{ffn}.intermediate_dense.bias"] = state[f"{ffn}.intermediate_dense.bias"][units]
        state[f"{ffn}.output_dense.weight"] = state[f"{ffn}.output_dense.weight"][:, units]
        masks[f"layer.{layer}.ffn_units"] = torch.zeros(48).index_fill_(0, units, 1.0)
    config = {
        **params,
        "extractor_conv_layer_config": [(16, 10, 5), (16, 3, 2), (len(keep_channels), 3, 2)]
        + [(16, 3, 2)] * 2
        + [(16, 2, 2)] * 2,
        "encoder_use_attention": [bool(h) for h in kept_heads],
        "encoder_use_feed_forward": [True] * 3,
        "encoder_ff_interm_features": [len(u) for u in kept_units],
        "normalize_waveform": False,
        "extractor_prune_conv_channels": False,
    }
    if family == "wavlm":
        config.update(
            encoder_total_num_heads=[4] * 3,
            encoder_remaining_heads=kept_heads,
            encoder_num_buckets=32,
            encoder_max_distance=64,
        )
    else:
        config.update(encoder_num_heads=[len(h) for h in kept_heads], encoder_head_dim=8)
    torch.save({"state_dict": state, "config": config, "distill_linear_projs": {}}, path)
    unpruned.set_masks(masks)
    return unpruned


@pytest.mark.parametrize("family", ["hubert", "wavlm"])
def test_dphubert_pruned_checkpoint_matches_masked_model(family, tmp_path):
    """A DPHuBERT checkpoint with pruned conv channels, heads, FFN units and a removed attention block."""
    path = tmp_path / "pruned_dphubert.pth"
    unpruned = pruned_dphubert_file(family, [[0, 2, 3], [], [1]], path)
    model = load_upstream(path)
    assert model.config.family == family and model.config.num_heads == [3, 0, 1]
    assert model.config.extractor_output_scale and model.config.conv_channels[2] == 16 - 6
    waves = torch.randn(2, 10000)
    with torch.no_grad():
        expected, _ = unpruned(waves)
        states, _ = model(waves)
    assert_states_close(states, expected)


def test_dphubert_wavlm_without_layer0_attention_runs_without_position_bias(tmp_path):
    """The official code keeps WavLM's position table in layer 0's attention: with that block pruned
    away the file has no table, and the model runs with no position bias in any layer."""
    path = tmp_path / "pruned_dphubert.pth"
    unpruned = pruned_dphubert_file("wavlm", [[], [0, 2, 3], [1]], path, without_position_bias=True)
    model = load_upstream(path)
    assert model.config.num_heads == [0, 3, 1] and model.config.relative_position_heads == 0
    assert model.transformer.relative_position is None
    waves = torch.randn(2, 10000)
    with torch.no_grad():
        expected, _ = unpruned(waves)
        states, _ = model(waves)
    assert_states_close(states, expected)
    compact = tmp_path / "compact"
    save_compact(model, compact)  # and it stays loadable as a compact checkpoint
    with torch.no_grad():
        assert_states_close(load_compact(compact)(waves)[0], states, atol=0)


def test_dphubert_training_checkpoint_is_refused_with_advice(tmp_path):
    reference, params = small_torchaudio_model("hubert", layer_norm_first=False)
    state = dphubert_state(reference, "hubert")
    state["encoder.transformer.layers.0.attention.hard_concrete_for_heads.log_alpha"] = torch.zeros(4)
    path = tmp_path / "distill.pth"
    torch.save({"state_dict": state, "config": params}, path)
    with pytest.raises(ValueError, match="HardConcrete"):
        load_upstream(path)


# ---------------------------------------------------------------------- compact checkpoints
def test_compact_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = perturb(SpeechEncoder(tiny_config("wavlm", layer_norm_first=True)))
    model.set_masks({"layer.1.heads": torch.tensor([1.0, 0.0, 0.5, 1.0]), "conv.6.channels": torch.rand(16)})
    compact = model.prune()
    save_compact(compact, tmp_path / "ckpt", metadata={"source": "test"})
    record_cost(tmp_path / "ckpt", measure_cost(compact))
    files = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert files == ["config.json", "cost.json", "model.safetensors"]
    config, metadata = read_compact_config(tmp_path / "ckpt")
    assert config == compact.config and metadata == {"source": "test"}
    cost = json.loads((tmp_path / "ckpt" / "cost.json").read_text())
    assert cost["params"] == compact.num_params() and cost["macs_per_second"] > 0
    loaded = load_upstream(tmp_path / "ckpt")
    waves = torch.randn(1, 8000)
    with torch.no_grad():
        assert_states_close(loaded(waves)[0], compact(waves)[0], atol=0)
    with pytest.raises(ValueError, match="masks"):
        save_compact(model, tmp_path / "masked")


def test_damaged_compact_checkpoint_gives_clear_errors(tmp_path):
    model = SpeechEncoder(tiny_config("hubert"))
    save_compact(model, tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    data["encoder"]["ffn_dims"] = [64, 64]
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="config.json: bad 'encoder' section"):
        load_compact(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(
        ValueError, match="not a transformers model directory|no config.json|not valid JSON|neither"
    ):
        load_upstream(tmp_path)


# ---------------------------------------------------------------------- safety and bad sources
class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch_save", "plain_pickle"])
def test_malicious_pickle_is_refused(writer, tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pt"
    payload = {"state_dict": {"w": torch.zeros(2)}, "config": _RunsCode(str(marker))}
    if writer == "torch_save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(UnsafeCheckpointError, match="refusing to load"):
        load_upstream(path)
    assert not marker.exists()


def test_bad_sources_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_upstream(tmp_path / "missing" / "model.pt")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_upstream("missing/model.pt")  # a file name, not a hub repository: no download attempted
    (tmp_path / "weights.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="no architecture"):
        load_upstream(tmp_path / "weights.safetensors")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        load_upstream(tmp_path / "junk.pt")
    torch.save({"w": torch.zeros(1)}, tmp_path / "bare.pt")
    with pytest.raises(ValueError, match="unrecognised checkpoint layout"):
        load_upstream(tmp_path / "bare.pt")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(ValueError, match="neither a compact checkpoint"):
        load_upstream(tmp_path / "empty_dir")


def test_command_line_converts_and_describes(tmp_path, capsys):
    from upstreams.__main__ import main

    reference = small_hf_model("wavlm", stable=False)
    reference.save_pretrained(tmp_path / "hf")
    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "compact"), "--no-cost"]) == 0
    converted = load_compact(tmp_path / "compact")
    assert read_compact_config(tmp_path / "compact")[1] == {"converted_from": str(tmp_path / "hf")}
    waves = torch.randn(1, 8000)
    expected, _ = hf_reference(reference, waves)
    with torch.no_grad():
        assert_states_close(converted(waves)[0], expected)
    capsys.readouterr()
    assert main(["info", str(tmp_path / "compact")]) == 0
    assert json.loads(capsys.readouterr().out)["num_params"] == converted.num_params()


def test_named_architectures_load_under_the_new_and_the_old_spelling():
    import upstreams
    from upstreams.model import ARCHITECTURES

    assert upstreams.PRESETS is upstreams.ARCHITECTURES is ARCHITECTURES
    assert "tiny_wavlm" in ARCHITECTURES
    new, old = load_upstream("arch:tiny_wavlm"), load_upstream("preset:tiny_wavlm")
    assert new.config == old.config == tiny_config("wavlm") and not new.training
    with pytest.raises(KeyError, match="unknown architecture 'tiny_hubret'.*tiny_hubert"):
        load_upstream("arch:tiny_hubret")


def test_a_checkpoint_is_complete_once_its_weights_exist(tmp_path):
    assert not is_complete_checkpoint(tmp_path / "missing")
    save_compact(SpeechEncoder(tiny_config("hubert")), tmp_path / "ckpt")
    assert is_complete_checkpoint(tmp_path / "ckpt") and not (tmp_path / "ckpt" / "cost.json").exists()
    (tmp_path / "ckpt" / "model.safetensors").unlink()
    assert is_compact_checkpoint(tmp_path / "ckpt") and not is_complete_checkpoint(tmp_path / "ckpt")
