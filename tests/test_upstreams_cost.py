"""Cost figures: MACs agree with a hand count of the architecture; latency and records behave."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from upstreams.checkpoint import save_compact
from upstreams.config import EncoderConfig
from upstreams.cost import CostReport, count_macs, measure_cost, read_stored_cost, record_cost
from upstreams.model import SpeechEncoder, tiny_config


def hand_count_macs(config: EncoderConfig, samples: int) -> int:
    """Multiply-accumulates of the convolutions, linear layers and attention products for one utterance."""
    macs, frames, in_channels = 0, samples, 1
    for channels, kernel, stride in zip(
        config.conv_channels, config.conv_kernels, config.conv_strides, strict=True
    ):
        frames = (frames - kernel) // stride + 1
        macs += frames * channels * in_channels * kernel
        in_channels = channels
    dim = config.embed_dim
    macs += frames * in_channels * dim  # feature projection
    padded_output = frames + 2 * (config.pos_conv_kernel // 2) - config.pos_conv_kernel + 1
    macs += padded_output * dim * (dim // config.pos_conv_groups) * config.pos_conv_kernel
    for layer in range(config.num_layers):
        width = config.num_heads[layer] * config.head_dim
        if config.use_attention[layer] and width:
            macs += 4 * frames * dim * width  # q, k, v, out projections
            macs += 2 * config.num_heads[layer] * frames * frames * config.head_dim  # QK^T and AV
            if config.family == "wavlm":
                macs += frames * config.num_heads[layer] * config.head_dim * 8  # gate projection
        if config.use_ffn[layer]:
            macs += 2 * frames * dim * config.ffn_dims[layer]
    return macs


@pytest.mark.parametrize("family", ["hubert", "wavlm"])
def test_macs_match_a_hand_count(family):
    config = tiny_config(family)
    model = SpeechEncoder(config)
    assert count_macs(model, seconds=2.0) == hand_count_macs(config, 32000)


def test_pruned_model_costs_less_and_report_is_consistent():
    torch.manual_seed(0)
    model = SpeechEncoder(tiny_config("hubert"))
    full = measure_cost(model, seconds=1.0, repeats=2)
    model.set_masks({"layer.0.heads": torch.tensor([1.0, 0.0, 0.0, 1.0]), "layer.2.ffn": torch.tensor(0.0)})
    compact = model.prune()
    pruned = measure_cost(compact, seconds=1.0, repeats=2)
    assert full.params == model.num_params() and pruned.params == compact.num_params() < full.params
    assert pruned.macs < full.macs == hand_count_macs(model.config, 16000)
    assert full.macs_per_second == full.macs / 1.0
    assert full.latency_s > 0 and full.real_time_factor == pytest.approx(full.latency_s / 1.0)
    assert full.device.startswith("cpu") and full.dtype == "float32"
    assert "params" in full.summary() and "RTF" in full.summary()


@pytest.mark.parametrize("family", ["hubert", "wavlm"])
def test_bias_only_blocks_are_counted(family):
    """A layer pruned to zero heads (and one to zero FFN units) keeps its masked output and can be costed."""
    torch.manual_seed(0)
    model = SpeechEncoder(tiny_config(family)).eval()
    shapes = model.mask_shapes()
    model.set_masks({"layer.0.heads": torch.zeros(shapes["layer.0.heads"]),
                     "layer.2.ffn_units": torch.zeros(shapes["layer.2.ffn_units"])})  # fmt: skip
    waves = torch.randn(1, 8000)
    with torch.no_grad():
        masked, _ = model(waves)
        compact = model.prune()
        pruned, _ = compact(waves)
    assert compact.config.num_heads[0] == 0 and compact.config.ffn_dims[2] == 0
    for expected, actual in zip(masked, pruned, strict=True):
        torch.testing.assert_close(actual, expected, atol=1e-4, rtol=0)
    report = measure_cost(compact, seconds=1.0, latency=False)
    assert 0 < report.macs == hand_count_macs(compact.config, 16000) < count_macs(model, seconds=1.0)
    attention = compact.transformer.layers[0].attention
    x = torch.randn(2, 5, compact.config.embed_dim, requires_grad=True)
    attention(x).sum().backward()  # the bias still receives its gradient outside no_grad
    torch.testing.assert_close(attention.out_proj.bias.grad, torch.full_like(attention.out_proj.bias, 10.0))


def test_measure_cost_accepts_checkpoints_and_s3prl_experts(tmp_path):
    model = SpeechEncoder(tiny_config("wav2vec2"))
    save_compact(model, tmp_path)
    from_path = measure_cost(str(tmp_path), seconds=1.0, latency=False)
    assert from_path.params == model.num_params() and from_path.latency_s is None

    class Expert(torch.nn.Module):  # the shape of our s3prl expert and of S3PRLUpstream
        def __init__(self) -> None:
            super().__init__()
            self.model = model

    assert measure_cost(Expert(), seconds=1.0, latency=False).macs == from_path.macs
    with pytest.raises(TypeError, match="cannot measure"):
        measure_cost(torch.nn.Linear(2, 2))


def test_record_cost_keeps_one_latency_entry_per_device(tmp_path):
    report = CostReport(
        params=10,
        macs=200,
        input_seconds=2.0,
        macs_per_second=100.0,
        latency_s=0.5,
        real_time_factor=0.25,
        device="cpu (2 threads)",
        dtype="float32",
        threads=2,
    )
    record_cost(tmp_path, report)
    record_cost(
        tmp_path, dataclasses.replace(report, device="cuda (H100)", latency_s=0.01, real_time_factor=0.005)
    )
    record_cost(tmp_path, dataclasses.replace(report, latency_s=0.4, real_time_factor=0.2))
    data = json.loads((tmp_path / "cost.json").read_text())
    assert data["params"] == 10 and data["macs_per_second"] == 100.0
    latency = {entry["device"]: entry["latency_s"] for entry in data["latency"]}
    assert latency == {"cpu (2 threads)": 0.4, "cuda (H100)": 0.01}


def test_read_stored_cost_takes_this_device_type_and_ignores_damaged_files(tmp_path):
    report = CostReport(params=10, macs=200, input_seconds=2.0, macs_per_second=100.0, latency_s=0.5,
                        real_time_factor=0.25, device="cpu (2 threads)", threads=2)  # fmt: skip
    record_cost(tmp_path, report)
    record_cost(tmp_path, dataclasses.replace(report, device="cuda (H100)", latency_s=0.01, real_time_factor=0.005))
    on_gpu = read_stored_cost(tmp_path, "cuda:0")
    assert on_gpu["latency_s"] == 0.01 and on_gpu["device"] == "cuda (H100)" and on_gpu["params"] == 10
    assert on_gpu["source"] == str(tmp_path / "cost.json") and "latency" not in on_gpu
    assert read_stored_cost(tmp_path, "cpu")["latency_s"] == 0.5
    assert read_stored_cost(None, "cpu") is None
    assert read_stored_cost(tmp_path / "missing", "cpu") is None
    for damaged in ("{not json", "[1, 2]", '{"macs": 3}'):
        (tmp_path / "cost.json").write_text(damaged)
        assert read_stored_cost(tmp_path, "cpu") is None


def test_a_stored_cost_names_its_file_relative_to_the_checkout():
    """Cached beside the features and copied into records: an absolute path would leak the machine's."""
    from core.paths import EMBEDDED_TEACHER
    from upstreams.cost import read_stored_cost

    stored = read_stored_cost(EMBEDDED_TEACHER.resolve(), "cpu")
    assert stored is not None and stored["source"] == "upstreams/teachers/synth-hubert-tiny/cost.json"
