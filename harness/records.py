"""Run records: one JSON file per (upstream, task) evaluation, in the manner of lm-evaluation-harness.

A record holds the metrics and the main score, the configuration and seeds, what was evaluated
(upstream name, checkpoint path and hash, parameters and MACs), on what (corpus name, root and
fingerprint), where and when (device, git commit, date, package versions) and how long it took.
The leaderboard is derived from these files, never edited by hand.

Files are written atomically under names that embed a timestamp and a random suffix, so two
processes writing records into the same directory never overwrite each other.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.metadata
import json
import logging
import os
import platform
import re
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import torch

from core.audio import SAMPLE_RATE
from core.files import write_json

logger = logging.getLogger(__name__)

RECORD_VERSION = 1
COST_INPUT_SECONDS = 10.0  # MACs and latency are measured on this much 16 kHz audio (as upstreams.cost)
_PACKAGES = ("torch", "torchaudio", "espnet-s3prl", "transformers", "numpy", "speech-prune-harness")


def upstream_cost(upstream: torch.nn.Module, ckpt: str | None = None, latency: bool = True) -> dict[str, Any]:
    """Parameters, MACs per second of audio and real-time factor of an upstream.

    In order of preference: the ``cost.json`` stored in a compact checkpoint directory, then
    ``upstreams.cost.measure_cost`` (our encoders), then a count here with
    ``torch.utils.flop_counter`` on ``COST_INPUT_SECONDS`` of audio (MACs = FLOPs / 2; operations
    it cannot see, such as the FFT of a filterbank front end, count as zero).

    Args:
        upstream: an ``s3prl.nn.S3PRLUpstream`` (or any module taking ``(wavs [B, T], lens [B])``).
        ckpt: the checkpoint it was loaded from, to look for ``cost.json``.
        latency: also time batch-1 forward passes (fastest of 5) for the real-time factor.
    """
    device = str(next((p.device for p in upstream.parameters()), "cpu"))
    stored = _stored_cost(ckpt, device)
    if stored is not None:
        return stored
    try:
        from upstreams.cost import measure_cost

        report = measure_cost(upstream, seconds=COST_INPUT_SECONDS, latency=latency)
        return {**dataclasses.asdict(report), "source": "upstreams.cost"}
    except (ImportError, TypeError):
        pass  # not one of our encoders: count it here
    model = getattr(upstream, "upstream", upstream)
    device = torch.device(device)
    wav = torch.randn(1, int(SAMPLE_RATE * COST_INPUT_SECONDS), device=device)
    wav_len = torch.tensor([wav.shape[1]], device=device)
    was_training = upstream.training
    upstream.eval()
    macs: int | None = None
    latency_s: float | None = None
    try:
        from torch.utils.flop_counter import FlopCounterMode

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


def _stored_cost(ckpt: str | None, device: str) -> dict[str, Any] | None:
    """The figures of ``<ckpt dir>/cost.json`` (written by ``upstreams.cost.record_cost``), if any."""
    from upstreams.cost import read_stored_cost

    return read_stored_cost(ckpt, device)


def checkpoint_provenance(ckpt: str | None) -> dict[str, Any]:
    """``compression`` (method, teacher, sparsity, dir) and metadata of a compact checkpoint, if it is one."""
    if not ckpt or not (Path(ckpt) / "config.json").is_file():
        return {}
    try:
        from upstreams.checkpoint import is_compact_checkpoint, read_compact_config

        if not is_compact_checkpoint(ckpt):
            return {}
        _, metadata = read_compact_config(ckpt)
    except (ImportError, OSError, ValueError) as err:
        logger.debug("no provenance read from %s (%s)", ckpt, err)
        return {}
    compression = metadata.get("compression") if isinstance(metadata.get("compression"), dict) else metadata
    info: dict[str, Any] = {"checkpoint_metadata": metadata}
    if compression.get("method"):
        info["compression"] = {
            "method": compression.get("method"),
            "teacher": compression.get("teacher"),
            "sparsity": compression.get("sparsity"),
            "dir": str(Path(ckpt).resolve()),
        }
    return info


def environment() -> dict[str, Any]:
    """Git commit, package versions, Python and platform of this run."""
    versions = {}
    for package in _PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "git": git_state(),
        "versions": {"python": platform.python_version(), **versions, "torch": torch.__version__},
        "platform": platform.platform(),
        "hostname": platform.node(),
    }


def git_state(repo: str | os.PathLike | None = None) -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the repository holding this code."""
    repo = Path(repo) if repo else Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=20, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo, capture_output=True, text=True, timeout=20, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(status.strip())}


def device_description(device: str) -> dict[str, Any]:
    """What the run used: ``cpu`` with its thread count, or the CUDA device name."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return {"type": "cuda", "name": torch.cuda.get_device_name(torch.device(device))}
    return {"type": "cpu", "threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}


def build_record(
    *,
    task: dict[str, Any],
    metrics: dict[str, dict[str, float]],
    upstream: dict[str, Any],
    corpus: dict[str, Any],
    config: dict[str, Any],
    seeds: dict[str, int],
    timing: dict[str, Any],
    device: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble one record. ``metrics`` maps split -> metric -> value; the main score is on test.

    Args:
        task: ``{"name", "metrics", "main_metric", "higher_is_better"}``.
    """
    main = task["main_metric"]
    if main not in metrics.get("test", {}):
        raise ValueError(f"record for task {task['name']!r} lacks the test value of its main metric {main!r}")
    return {
        "record_version": RECORD_VERSION,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "task": task,
        "main_score": {
            "name": main,
            "value": metrics["test"][main],
            "higher_is_better": task["higher_is_better"],
            "split": "test",
        },
        "metrics": metrics,
        "upstream": upstream,
        "corpus": corpus,
        "config": config,
        "seeds": seeds,
        "timing": timing,
        "device": device,
        **environment(),
        **(extra or {}),
    }


def write_record(record: dict[str, Any], directory: str | os.PathLike) -> Path:
    """Write ``record`` atomically as ``<upstream>__<task>__<UTC time>__<random>.json``; returns the path."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    name = f"{_safe(record['upstream']['name'])}__{_safe(record['task']['name'])}__{stamp}__{uuid.uuid4().hex[:8]}.json"
    path = Path(directory) / name
    write_json(path, record)
    return path


def load_records(directory: str | os.PathLike) -> list[dict[str, Any]]:
    """Every record under ``directory`` (sorted by file name); unreadable files are skipped with a warning."""
    records = []
    for path in sorted(Path(directory).glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            logger.warning("skipping unreadable record %s (%s)", path, err)
            continue
        if isinstance(record, dict) and "main_score" in record:
            records.append(record)
    return records


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "-", text)[:80]
