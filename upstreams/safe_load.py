"""Load ``torch.save`` files without running code: ``torch.load(weights_only=True)`` and clear refusals.

A pickle can name any importable function and call it while loading (``__reduce__``). We only
use PyTorch's weights-only unpickler, which accepts tensors and plain containers, plus a few
inert configuration classes that fairseq checkpoints contain (``argparse.Namespace`` and
OmegaConf's config containers). Anything else is refused with :class:`UnsafeCheckpointError`.

:func:`check_checkpoint` applies the same test to a file or a directory that other code (an s3prl
hub entry, say) is about to open, without keeping what it read.
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path
from typing import Any

import torch


class UnsafeCheckpointError(ValueError):
    """The file holds pickled objects that could run code when loaded; it was not unpickled.

    ``reason`` says what was refused (the first object outside the allow-list)."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


def _allowed_globals() -> list:
    allowed: list = [argparse.Namespace]
    try:  # fairseq stores its configuration as OmegaConf containers
        import typing

        from omegaconf import DictConfig, ListConfig, nodes
        from omegaconf.base import ContainerMetadata, Metadata

        allowed += [DictConfig, ListConfig, ContainerMetadata, Metadata, typing.Any, dict, list, int]
        allowed += [nodes.AnyNode, nodes.StringNode, nodes.IntegerNode, nodes.FloatNode, nodes.BooleanNode]
    except ImportError:
        pass
    return allowed


def safe_torch_load(path: str | Path) -> Any:
    """``torch.load(path)`` on CPU that never executes pickled code.

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: the pickle references functions or classes outside the allow-list.
        ValueError: the file is not a PyTorch checkpoint at all.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    with open(path, "rb") as handle:
        head = handle.read(2)
    if head != b"PK" and head[:1] != b"\x80":  # neither torch's zip format nor a pickle (protocol >= 2)
        raise ValueError(
            f"{path} is not a PyTorch checkpoint (neither a torch.save zip archive nor a pickle)"
        )
    try:
        with torch.serialization.safe_globals(_allowed_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        message = str(error)
        if "Weights only load failed" not in message:
            raise ValueError(f"{path} is not a readable PyTorch checkpoint: {message}") from None
        reasons = [
            line.strip()
            for line in message.splitlines()
            if "GLOBAL" in line or "Unsupported" in line or "unsupported" in line
        ]
        reason = reasons[0] if reasons else "it contains objects other than tensors and plain containers"
        reason = reason.rstrip(".")
        raise UnsafeCheckpointError(
            f"refusing to load {path}: {reason}. Untrusted checkpoints are never unpickled here; "
            "only safetensors files or torch.save files holding tensors, numbers, strings and plain "
            "dicts/lists are accepted. If you trust the file, re-save its state dict and config as "
            "plain containers (or convert it to a compact checkpoint) in a separate, trusted step.",
            reason=reason,
        ) from None
    except RuntimeError as error:
        raise ValueError(f"{path} is not a readable PyTorch checkpoint: {error}") from None


#: Files in a checkpoint directory that a loader might unpickle, or read as safetensors.
PICKLE_SUFFIXES = {".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle", ".tar"}
SAFETENSORS_SUFFIX = ".safetensors"


def check_checkpoint(path: str | Path) -> None:
    """Raise unless ``path`` (a file, or every weights file under a directory) loads without running
    code: as safetensors, or with :func:`safe_torch_load`.

    A file is checked whatever its name (a loader may unpickle any file it is given); in a directory,
    the files named like weights (:data:`PICKLE_SUFFIXES`, ``.safetensors``).

    Raises:
        FileNotFoundError: no such file or directory.
        UnsafeCheckpointError: a pickle that names functions or classes outside the allow-list.
        ValueError: a file that is neither a readable PyTorch checkpoint nor valid safetensors.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in {*PICKLE_SUFFIXES, SAFETENSORS_SUFFIX})
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(f"checkpoint {path} not found")
    for file in files:
        if file.suffix == SAFETENSORS_SUFFIX:
            _check_safetensors(file)
        else:
            safe_torch_load(file)


def _check_safetensors(path: Path) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except Exception as error:  # noqa: BLE001 - safetensors raises its own error types
        raise ValueError(f"{path} is not a readable safetensors file ({error}); it may be truncated") from None
