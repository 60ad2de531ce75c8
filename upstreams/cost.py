"""The cost of an encoder: parameters, MACs per second of audio, latency and real-time factor.

MACs are counted with ``torch.utils.flop_counter`` (MACs = FLOPs / 2) on one utterance of
``seconds`` of audio: convolutions, linear layers and attention (CPU's fused attention kernel is
added to the counter here). Normalisations, activations and softmax are not counted. Attention
grows with the square of the length, so the figure depends a little on ``seconds`` (10 s default).

Latency is the fastest of ``repeats`` timed batch-1 forward passes on the current device (the
minimum: other work on the machine only ever adds time, so it is the least disturbed figure); the real-time
factor is latency / audio duration (below 1 is faster than real time). ``record_cost`` stores the
figures in the checkpoint directory (``cost.json``), one latency entry per device and dtype, and
``read_stored_cost`` reads them back for one device type. Nothing here runs unless asked:
``upstreams.checkpoint.save_compact`` never measures, its callers call ``record_cost`` (or
``try_record_cost``, which logs a failure instead of raising) when they want the figures.

This module is the one place the cost is measured. :func:`measure_upstream_cost` is what an
evaluation records for any s3prl upstream: the stored ``cost.json`` of a compact checkpoint, else
:func:`measure_cost` when the upstream is one of our encoders (:func:`find_encoder`), else a count
of the module as it is with ``torch.utils.flop_counter`` (any s3prl upstream).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import platform
import time
from pathlib import Path
from typing import Any

import torch

from core.audio import SAMPLE_RATE
from core.files import write_json
from core.paths import portable_path
from upstreams.checkpoint import COST_NAME
from upstreams.model import SpeechEncoder

logger = logging.getLogger(__name__)

COST_INPUT_SECONDS = 10.0  # MACs and latency are measured on this much 16 kHz audio unless told otherwise


@dataclasses.dataclass
class CostReport:
    """Cost figures of one model. ``macs`` is for ``input_seconds`` of audio at batch size 1."""

    params: int
    macs: int
    input_seconds: float
    macs_per_second: float
    latency_s: float | None = None
    real_time_factor: float | None = None
    device: str = "cpu"
    dtype: str = "float32"
    threads: int = 1
    torch_version: str = torch.__version__

    def summary(self) -> str:
        text = f"{self.params / 1e6:.2f} M params, {self.macs_per_second / 1e9:.2f} GMACs per second of audio"
        if self.latency_s is not None:
            text += f", {self.latency_s * 1e3:.0f} ms for {self.input_seconds:g} s (RTF {self.real_time_factor:.4f}) on {self.device}"
        return text


def find_encoder(module: Any) -> SpeechEncoder | None:
    """The :class:`SpeechEncoder` that ``module`` is or wraps, else None.

    Our wrappers hold it at most two attributes deep: ``PrunedUpstreamExpert.model``, and
    ``S3PRLUpstream.upstream.model`` for an s3prl upstream built from one of our hub entries. Any
    other module (s3prl's own upstreams, whose experts hold their own model classes) gives None.
    """
    candidate = module
    for _ in range(3):
        if isinstance(candidate, SpeechEncoder):
            return candidate
        candidate = getattr(candidate, "model", None) or getattr(candidate, "upstream", None)
    return None


def _resolve_model(model_or_source: Any):
    """A SpeechEncoder from a SpeechEncoder, our s3prl expert, an S3PRLUpstream, or a checkpoint path."""
    encoder = find_encoder(model_or_source)
    if encoder is not None:
        return encoder
    if isinstance(model_or_source, str | Path):
        from upstreams.importers import load_upstream

        return load_upstream(model_or_source)
    raise TypeError(
        f"cannot measure the cost of a {type(model_or_source).__name__}: expected a SpeechEncoder or a checkpoint"
    )


def _attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def count_macs(model, seconds: float = COST_INPUT_SECONDS) -> int:
    """Multiply-accumulates of one forward pass over ``seconds`` of audio (batch 1)."""
    from torch.utils.flop_counter import FlopCounterMode

    parameter = next(model.parameters())
    waveform = torch.randn(1, int(seconds * SAMPLE_RATE), device=parameter.device, dtype=parameter.dtype)
    custom = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _attention_flops}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=custom) as counter:
            model(waveform)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


def measure_latency(model, seconds: float = COST_INPUT_SECONDS, repeats: int = 5, warmup: int = 1) -> float:
    """Fastest seconds of a batch-1 forward over ``seconds`` of audio on the model's device."""
    parameter = next(model.parameters())
    waveform = torch.randn(1, int(seconds * SAMPLE_RATE), device=parameter.device, dtype=parameter.dtype)
    synchronize = torch.cuda.synchronize if parameter.device.type == "cuda" else (lambda: None)
    was_training = model.training
    model.eval()
    times = []
    try:
        with torch.inference_mode():
            for step in range(warmup + repeats):
                synchronize()
                start = time.perf_counter()
                model(waveform)
                synchronize()
                if step >= warmup:
                    times.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    return min(times)


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})"


def measure_cost(
    model_or_source: Any, seconds: float = COST_INPUT_SECONDS, latency: bool = True, repeats: int = 5, warmup: int = 1
) -> CostReport:
    """Parameters, MACs (per ``seconds`` and per second of audio) and, if ``latency``, speed.

    Args:
        model_or_source: a ``SpeechEncoder`` (on the device and dtype to time), our s3prl expert or
            ``S3PRLUpstream``, or anything ``load_upstream`` accepts (loaded on CPU).
        seconds: length of the test utterance.
        latency: also time ``repeats`` forward passes after ``warmup`` ones.
    """
    model = _resolve_model(model_or_source)
    parameter = next(model.parameters())
    macs = count_macs(model, seconds)
    report = CostReport(
        params=model.num_params(),
        macs=int(macs),
        input_seconds=seconds,
        macs_per_second=macs / seconds,
        device=device_description(parameter.device),
        dtype=str(parameter.dtype).removeprefix("torch."),
        threads=torch.get_num_threads(),
    )
    if latency:
        report.latency_s = measure_latency(model, seconds, repeats, warmup)
        report.real_time_factor = report.latency_s / seconds
    logger.info("cost: %s", report.summary())
    return report


def measure_upstream_cost(upstream: torch.nn.Module, ckpt: str | None = None, latency: bool = True) -> dict[str, Any]:
    """Parameters, MACs per second of audio and real-time factor of an s3prl upstream, as a record stores them.

    In order of preference:

    - the ``cost.json`` stored in the compact checkpoint directory ``ckpt`` (:func:`read_stored_cost`,
      the latency timed on this device type; ``"source"`` is the file's path);
    - :func:`measure_cost` on ``COST_INPUT_SECONDS`` of audio when ``upstream`` is or wraps one of our
      encoders (:func:`find_encoder`): the fields of :class:`CostReport` and ``"source": "upstreams.cost"``;
    - otherwise a count of ``upstream(wavs [1, T], lens [1])`` with ``torch.utils.flop_counter`` on
      ``COST_INPUT_SECONDS`` of audio (MACs = FLOPs / 2; operations it cannot see, such as the FFT of a
      filterbank front end, count as zero) and the fastest of 5 timed passes after one warm-up:
      ``params``, ``macs``, ``input_seconds``, ``macs_per_second``, ``latency_s``, ``real_time_factor``,
      ``device``, ``threads`` and ``"source": "torch.flop_counter"``. A count or timing that fails is
      logged and recorded as None, never guessed.

    Args:
        upstream: an ``s3prl.nn.S3PRLUpstream`` (or any module taking ``(wavs [B, T], lens [B])``),
            on the device to time it on.
        ckpt: the checkpoint it was loaded from, to look for ``cost.json``.
        latency: also time batch-1 forward passes for the real-time factor.
    """
    device = str(next((p.device for p in upstream.parameters()), "cpu"))
    stored = read_stored_cost(ckpt, device)  # the cost.json of a compact checkpoint, if any
    if stored is not None:
        return stored
    encoder = find_encoder(upstream)
    if encoder is not None:
        report = measure_cost(encoder, seconds=COST_INPUT_SECONDS, latency=latency)
        return {**dataclasses.asdict(report), "source": "upstreams.cost"}
    return _flop_counter_cost(upstream, torch.device(device), latency)


def _flop_counter_cost(upstream: torch.nn.Module, device: torch.device, latency: bool) -> dict[str, Any]:
    """The ``torch.flop_counter`` figures of :func:`measure_upstream_cost` for a module that is not ours."""
    from torch.utils.flop_counter import FlopCounterMode

    model = getattr(upstream, "upstream", upstream)
    wav = torch.randn(1, int(SAMPLE_RATE * COST_INPUT_SECONDS), device=device)
    wav_len = torch.tensor([wav.shape[1]], device=device)
    was_training = upstream.training
    upstream.eval()
    macs: int | None = None
    latency_s: float | None = None
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            upstream(wav, wav_len)
        macs = counter.get_total_flops() // 2
        if latency:
            times = []
            with torch.inference_mode():
                for _ in range(6):
                    start = time.perf_counter()
                    upstream(wav, wav_len)
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    times.append(time.perf_counter() - start)
            latency_s = min(times[1:])
    except Exception as err:  # a cost we cannot count is reported as unknown, never guessed
        logger.warning("could not measure the upstream's MACs or latency (%s); recording them as unknown", err)
    finally:
        upstream.train(was_training)
    return {
        "params": int(sum(p.numel() for p in model.parameters())),
        "macs": macs,
        "input_seconds": COST_INPUT_SECONDS,
        "macs_per_second": None if macs is None else macs / COST_INPUT_SECONDS,
        "latency_s": latency_s,
        "real_time_factor": None if latency_s is None else latency_s / COST_INPUT_SECONDS,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "source": "torch.flop_counter",
    }


def try_record_cost(model: Any, directory: str | Path) -> Path | None:
    """:func:`record_cost` of :func:`measure_cost` of ``model`` (defaults) in ``directory``; returns
    the ``cost.json`` path, or None when measuring or writing failed. The failure is logged as a
    warning, never raised: a checkpoint is complete without its cost record."""
    try:
        return record_cost(directory, measure_cost(model))
    except Exception as err:  # noqa: BLE001 - the checkpoint is complete without its cost record
        logger.warning("%s: could not measure the cost (%s: %s); saved without cost.json", directory, type(err).__name__, err)
        return None


def record_cost(directory: str | Path, report: CostReport) -> Path:
    """Store ``report`` in ``directory/cost.json``; latency entries of other devices are kept."""
    path = Path(directory) / COST_NAME
    existing: dict[str, Any] = {}
    if path.is_file():
        try:
            existing = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            logger.warning("%s is damaged; rewriting it", path)
    timings = [
        entry
        for entry in existing.get("latency", [])
        if (entry.get("device"), entry.get("dtype")) != (report.device, report.dtype)
    ]
    if report.latency_s is not None:
        timings.append(
            {
                "device": report.device,
                "dtype": report.dtype,
                "threads": report.threads,
                "input_seconds": report.input_seconds,
                "latency_s": report.latency_s,
                "real_time_factor": report.real_time_factor,
                "torch_version": report.torch_version,
                "measured_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            }
        )
    write_json(
        path,
        {
            "params": report.params,
            "macs_per_second": report.macs_per_second,
            "macs": report.macs,
            "input_seconds": report.input_seconds,
            "latency": timings,
        },
    )
    return path


def read_stored_cost(directory: str | Path | None, device: str) -> dict[str, Any] | None:
    """The figures of ``directory/cost.json`` (written by :func:`record_cost`) for a run on ``device``.

    Returns the stored figures (``params``, ``macs``, ``macs_per_second``, ...) without the latency
    list and, from its first entry timed on the device type of ``device`` (cuda or cpu), ``latency_s``,
    ``real_time_factor``, ``device`` and ``threads``; plus ``"source"``, the file's path. None when
    ``directory`` is None or the file is missing, unreadable, not a JSON object or has no ``params``.
    """
    path = Path(directory) / COST_NAME if directory else None
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or "params" not in data:
        return None
    cost = {k: v for k, v in data.items() if k != "latency"}
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    for entry in data.get("latency") or []:  # one per device it was timed on: take this run's kind
        if str(entry.get("device", "")).startswith(device_type):
            cost.update(latency_s=entry.get("latency_s"), real_time_factor=entry.get("real_time_factor"),
                        device=entry.get("device"), threads=entry.get("threads"))
            break
    return {**cost, "source": portable_path(path)}  # relative to the checkout when inside it
