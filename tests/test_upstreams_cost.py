"""Cost figures: MACs agree with a hand count of the architecture; latency and records behave."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from upstreams.checkpoint import save_compact
from upstreams.config import EncoderConfig
from upstreams.cost import (
    COST_INPUT_SECONDS,
    CostReport,
    count_macs,
    find_encoder,
    measure_cost,
    measure_upstream_cost,
    read_stored_cost,
    record_cost,
    try_record_cost,
)
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


class ConvFrontEnd(torch.nn.Module):
    """Not one of our encoders: a module with the s3prl upstream call ``(wavs [B, T], lens [B])``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(1, 4, kernel_size=400, stride=320)

    def forward(self, wavs: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        return self.conv(wavs[:, None])


class Wrapper(torch.nn.Module):  # the shape of S3PRLUpstream: the expert under .upstream
    def __init__(self, upstream: torch.nn.Module) -> None:
        super().__init__()
        self.upstream = upstream

    def forward(self, wavs, lens):
        return self.upstream(wavs, lens)


def test_a_module_that_is_not_our_encoder_is_counted_with_the_flop_counter():
    front_end = ConvFrontEnd()
    assert find_encoder(Wrapper(front_end)) is None
    cost = measure_upstream_cost(Wrapper(front_end))
    frames = (int(COST_INPUT_SECONDS * 16000) - 400) // 320 + 1
    assert cost["source"] == "torch.flop_counter" and cost["macs"] == frames * 4 * 400
    assert cost["params"] == sum(p.numel() for p in front_end.parameters())
    assert cost["macs_per_second"] == cost["macs"] / COST_INPUT_SECONDS and cost["input_seconds"] == COST_INPUT_SECONDS
    assert cost["latency_s"] > 0 and cost["real_time_factor"] == pytest.approx(cost["latency_s"] / COST_INPUT_SECONDS)
    assert cost["device"] == "cpu" and set(cost) == {"params", "macs", "input_seconds", "macs_per_second", "latency_s",
                                                     "real_time_factor", "device", "threads", "source"}  # fmt: skip
    assert measure_upstream_cost(front_end, latency=False)["latency_s"] is None


def test_our_encoder_goes_to_measure_cost_and_its_errors_are_not_hidden(tmp_path, monkeypatch):
    model = SpeechEncoder(tiny_config("hubert"))

    class Expert(torch.nn.Module):  # our s3prl expert: the encoder under .model
        def __init__(self) -> None:
            super().__init__()
            self.model = model

    upstream = Wrapper(Expert())
    assert find_encoder(upstream) is model
    cost = measure_upstream_cost(upstream, latency=False)
    assert cost["source"] == "upstreams.cost" and cost["params"] == model.num_params()
    assert cost["macs"] == count_macs(model, COST_INPUT_SECONDS) and cost["latency_s"] is None
    assert set(cost) == {f.name for f in dataclasses.fields(CostReport)} | {"source"}

    save_compact(model, tmp_path)  # a stored cost.json is preferred to a new measurement
    record_cost(tmp_path, CostReport(params=1, macs=2, input_seconds=1.0, macs_per_second=2.0))
    assert measure_upstream_cost(upstream, str(tmp_path))["source"] == str(tmp_path / "cost.json")

    def broken(*args, **kwargs):
        raise TypeError("a bug in our encoder")

    monkeypatch.setattr(model, "forward", broken)  # once fell back to the flop counter, hiding the bug
    with pytest.raises(TypeError, match="a bug in our encoder"):
        measure_upstream_cost(upstream, latency=False)


def test_try_record_cost_logs_a_failure_instead_of_raising(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="upstreams.cost"):
        assert try_record_cost(torch.nn.Linear(2, 2), tmp_path) is None
    assert "could not measure the cost (TypeError" in caplog.text and not (tmp_path / "cost.json").exists()
    path = try_record_cost(SpeechEncoder(tiny_config("hubert")), tmp_path)
    assert path == tmp_path / "cost.json" and json.loads(path.read_text())["macs"] > 0
