"""``--device``: one default and one resolver for every command.

``auto`` is CUDA when a GPU is visible, else the CPU. torch is imported only when a device is resolved.
"""

from __future__ import annotations

import re

DEFAULT_DEVICE = "auto"
DEVICE_HELP = f"auto (CUDA when present), cpu, cuda or cuda:N (default: {DEFAULT_DEVICE})"


def resolve_device(device: str | None = DEFAULT_DEVICE) -> str:
    """``auto`` (or None) -> ``cuda`` or ``cpu``; ``cpu``, ``cuda``, ``cuda:N`` checked against this machine."""
    import torch

    if device is None or device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if not re.fullmatch(r"cuda(:\d+)?", device):
        raise ValueError(f"--device {device!r}: unknown device; use {DEVICE_HELP.split(' (default')[0]}")
    if not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available here; use --device cpu or auto")
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device
