"""Compact checkpoints: a directory with ``config.json`` (architecture) and ``model.safetensors`` (weights).

Layout::

    CKPT_DIR/
      config.json         {"format": "compact-speech-encoder", "format_version": 1,
                           "encoder": {EncoderConfig fields}, "metadata": {...}}
      model.safetensors   the state dict of SpeechEncoder(config)
      cost.json           (optional) parameters, MACs per second, latency (upstreams.cost.record_cost)

Loading needs only this package and safetensors: no pickles, no training code. Every file is
written atomically (``core.files``). The three file names are spelled here only.

Writing a checkpoint never measures its cost: that takes forward passes over 10 s of audio, so a
caller that wants ``cost.json`` asks for it, after :func:`save_compact`::

    save_compact(model, directory, metadata={...})
    record_cost(directory, measure_cost(model))    # upstreams.cost
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from core.files import atomic_path, write_json
from upstreams.config import EncoderConfig
from upstreams.model import SpeechEncoder

logger = logging.getLogger(__name__)

FORMAT = "compact-speech-encoder"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
COST_NAME = "cost.json"


def is_compact_checkpoint(path: str | Path) -> bool:
    """True if ``path`` is a directory whose ``config.json`` declares the compact format."""
    config_path = Path(path) / CONFIG_NAME
    if not config_path.is_file():
        return False
    try:
        return json.loads(config_path.read_text(encoding="utf-8")).get("format") == FORMAT
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


def is_complete_checkpoint(path: str | Path) -> bool:
    """True if ``path`` is a compact checkpoint whose weights file exists (e.g. not cut short before them)."""
    return is_compact_checkpoint(path) and (Path(path) / WEIGHTS_NAME).is_file()


def save_compact(model: SpeechEncoder, directory: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model`` as a compact checkpoint (weights, then config.json); returns the directory.

    The cost is not measured (see the module docstring for writing ``cost.json`` too).

    Args:
        model: the encoder; masks must be folded first (``model.prune()``).
        directory: created if missing; existing files of the same names are replaced atomically.
        metadata: JSON-serialisable provenance (source checkpoint, method, ...), kept in config.json.
    """
    from safetensors.torch import save_file

    if model.masks():
        raise ValueError("the model has masks set; call model.prune() to fold them before saving")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().to("cpu").contiguous() for name, tensor in model.state_dict().items()}
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    write_json(
        directory / CONFIG_NAME,
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "encoder": model.config.to_dict(),
            "num_params": model.num_params(),
            "metadata": metadata or {},
        },
    )
    logger.info("saved %s (%d parameters) to %s", model.config.describe(), model.num_params(), directory)
    return directory


def read_compact_config(directory: str | Path) -> tuple[EncoderConfig, dict[str, Any]]:
    """The :class:`EncoderConfig` and metadata stored in a compact checkpoint directory."""
    config_path = Path(directory) / CONFIG_NAME
    try:
        data = json.loads(config_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{config_path} not found: not a compact checkpoint directory") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_path} is not valid JSON ({error}); the checkpoint is damaged") from None
    if data.get("format") != FORMAT:
        raise ValueError(f"{config_path} has format {data.get('format')!r}, expected {FORMAT!r}")
    if data.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{config_path} has format_version {data['format_version']}; this code reads up to "
            f"{FORMAT_VERSION}: update speech-prune-harness"
        )
    try:
        config = EncoderConfig.from_dict(data["encoder"])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{config_path}: bad 'encoder' section: {error}") from None
    return config, data.get("metadata", {})


def load_compact(
    directory: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> SpeechEncoder:
    """Rebuild the ``SpeechEncoder`` stored in a compact checkpoint directory (in eval mode)."""
    from safetensors.torch import load_file

    directory = Path(directory)
    config, _ = read_compact_config(directory)
    weights_path = directory / WEIGHTS_NAME
    if not weights_path.is_file():
        raise FileNotFoundError(f"{weights_path} not found: the compact checkpoint has no weights")
    model = SpeechEncoder(config, initialize=False)
    state = load_file(str(weights_path), device=str(device))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{weights_path} does not match {directory / CONFIG_NAME}: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    model.to(device=device, dtype=dtype)
    return model.eval()
