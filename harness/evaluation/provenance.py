"""What a run record says about where and how it was made: a compact checkpoint's provenance, the
environment (git commit, package versions, platform) and the device.

The record format itself (schema, version, writer, reader) lives in :mod:`core.records`; this
module gathers the facts that need torch and the upstreams, and :func:`build_record` assembles them.
The upstream's cost is measured in one place, :func:`upstreams.cost.measure_upstream_cost`.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

import torch

from core.paths import portable_tree, repo_root
from core.records import Record, TaskInfo

logger = logging.getLogger(__name__)

_PACKAGES = ("torch", "torchaudio", "espnet-s3prl", "transformers", "numpy", "speech-prune-harness")


def checkpoint_provenance(ckpt: str | None) -> dict[str, Any]:
    """``compression`` (method, teacher, sparsity, dir) and metadata of a compact checkpoint, if it is one."""
    from upstreams.checkpoint import is_compact_checkpoint, read_compact_config, read_compression_notes

    if not ckpt or not is_compact_checkpoint(ckpt):
        return {}
    try:
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
            **{key: compression[key] for key in SIZE_FIELDS if key in compression},
            **read_compression_notes(ckpt),  # what the compression found (convexity curves), beside the weights
        }
    return info


#: What a record copies of a compression's size (for budgets and labels): the methods that change
#: the depth (convexity, convexity_dphubert, distill) add it, convexity whether the rule picked it
#: and, for a per-task cut, which task's label curve chose it (``cut_for``, ``labels``).
SIZE_FIELDS = ("achieved_sparsity", "params", "teacher_params", "kept_layers", "teacher_layers", "selected", "cut_for",
               "labels")  # fmt: skip


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
    """What the run used: ``cpu`` with its thread count, model, vector ISA and BLAS, or the CUDA
    device name with its CUDA and cuDNN versions. Float results differ between machines (different
    kernels round differently), so a record says which kernels made it."""
    blas = re.search(r"BLAS_INFO=(\w+)", torch.__config__.show())
    if device.startswith("cuda") and torch.cuda.is_available():
        return {"type": "cuda", "name": torch.cuda.get_device_name(torch.device(device)), "cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version()}  # fmt: skip
    return {
        "type": "cpu", "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "model": _cpu_model(),
        "isa": torch.backends.cpu.get_cpu_capability(), "blas": blas.group(1) if blas else None,
    }  # fmt: skip


def _cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
) -> Record:
    """One record of this run: the given sections plus this process's environment.

    Paths inside the working directory's repository (checkpoint, corpus, compression dir and
    teacher, cost source, the command's arguments, anywhere in the sections) are stored relative to
    its root (:func:`core.paths.portable_tree`), so a record holds no absolute path of the machine
    that made it; paths outside it stay as given.

    Args:
        task: ``{"name", "metrics", "main_metric", "higher_is_better"}``.
        metrics: split -> metric -> value; the main score is the test value of the main metric.
    """
    info = TaskInfo(str(task["name"]), tuple(task["metrics"]), str(task["main_metric"]), bool(task["higher_is_better"]))
    root = repo_root()
    upstream, corpus, config, timing, extra = (portable_tree(s, root) for s in (upstream, corpus, config, timing, extra))
    return Record.create(
        task=info, metrics=metrics, upstream=upstream, corpus=corpus, config=config,
        sections={"seeds": seeds, "timing": timing, "device": device, **environment()}, extra=extra,
    )  # fmt: skip
