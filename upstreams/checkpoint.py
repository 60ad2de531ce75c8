"""Compact checkpoints: a directory with ``config.json`` (architecture) and ``model.safetensors`` (weights).

Layout::

    CKPT_DIR/
      config.json         {"format": "compact-speech-encoder", "format_version": 1,
                           "encoder": {EncoderConfig fields}, "metadata": {...}}
      model.safetensors   the state dict of SpeechEncoder(config)
      cost.json           (optional) parameters, MACs per second, latency (upstreams.cost.record_cost)
      compression.json    (optional) what the compression found about this checkpoint, for the
                          records made from it (e.g. convexity curves): {"<key>": value, ...}

Loading needs only this package and safetensors: no pickles, no training code. Every file is
written atomically (``core.files``). The four file names are spelled here only. A checkpoint's
identity (:func:`upstreams.identity.checkpoint_hash`) is its config and weights: ``cost.json`` and
``compression.json`` can be written later without changing it.

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

from core.files import atomic_path, naming_write_failures, write_json, write_or_rescue
from upstreams.config import EncoderConfig
from upstreams.model import SpeechEncoder

logger = logging.getLogger(__name__)

FORMAT = "compact-speech-encoder"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
COST_NAME = "cost.json"
NOTES_NAME = "compression.json"


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


def save_compact(
    model: SpeechEncoder, directory: str | Path, metadata: dict[str, Any] | None = None,
    storage_dtype: torch.dtype | None = None,
) -> Path:  # fmt: skip
    """Write ``model`` as a compact checkpoint (weights, then config.json); returns the directory.

    The cost is not measured (see the module docstring for writing ``cost.json`` too).

    Args:
        model: the encoder; masks must be folded first (``model.prune()``).
        directory: created if missing; existing files of the same names are replaced atomically.
        metadata: JSON-serialisable provenance (source checkpoint, method, ...), kept in config.json.
        storage_dtype: store the floating-point weights in this dtype (``torch.float16`` halves the
            file; :func:`load_compact` reads them back into a float32 model). None keeps the model's.

    Raises:
        core.files.WriteError: ``directory`` cannot be written (a full disk, ...); the checkpoint was
            then saved under the system's temporary directory, and the message says where.
    """
    if model.masks():
        raise ValueError("the model has masks set; call model.prune() to fold them before saving")
    state = {name: tensor.detach().to("cpu").contiguous() for name, tensor in model.state_dict().items()}
    if storage_dtype is not None:
        state = {name: t.to(storage_dtype) if t.is_floating_point() else t for name, t in state.items()}
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "encoder": model.config.to_dict(),
        "num_params": model.num_params(),
        "metadata": metadata or {},
    }
    if storage_dtype is not None:
        config["storage_dtype"] = str(storage_dtype).removeprefix("torch.")
    directory = write_or_rescue(lambda target: _write_compact(state, config, target), directory, "compact checkpoint")
    logger.info("saved %s (%d parameters) to %s", model.config.describe(), model.num_params(), directory)
    return directory


def _write_compact(state: dict[str, torch.Tensor], config: dict[str, Any], directory: Path) -> Path:
    from safetensors.torch import save_file

    with naming_write_failures(directory):
        directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    write_json(directory / CONFIG_NAME, config)
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


def check_compact(directory: str | Path) -> EncoderConfig:
    """Check a compact checkpoint without reading its weights: the config, the weights file's header,
    and every tensor's name and shape against the config. Returns the config.

    Raises:
        FileNotFoundError: no config.json or no weights file.
        ValueError: naming the file and what to do: damaged (e.g. truncated) weights, or weights of
            another model than the config describes.
    """
    from safetensors import safe_open

    directory = Path(directory)
    config, _ = read_compact_config(directory)
    weights_path = directory / WEIGHTS_NAME
    if not weights_path.is_file():
        raise FileNotFoundError(f"{weights_path} not found: the compact checkpoint has no weights")
    try:
        with safe_open(str(weights_path), framework="pt") as handle:
            shapes = {key: list(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except Exception as error:  # noqa: BLE001 - safetensors raises its own error type
        raise ValueError(
            f"{weights_path} is damaged ({error}); it was probably cut short: copy or write the checkpoint again"
        ) from None
    with torch.device("meta"):  # shapes only, no memory
        expected = {key: list(value.shape) for key, value in SpeechEncoder(config, initialize=False).state_dict().items()}
    mismatched = sorted(key for key in expected.keys() & shapes.keys() if expected[key] != shapes[key])
    missing, unexpected = sorted(expected.keys() - shapes.keys()), sorted(shapes.keys() - expected.keys())
    if mismatched or missing or unexpected:
        if mismatched:
            name = mismatched[0]
            detail = f"{name} is {shapes[name]} in the weights but {expected[name]} in the config ({len(mismatched)} tensor(s) differ)"
        else:
            detail = f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        raise ValueError(
            f"{weights_path} does not match {directory / CONFIG_NAME}: {detail}; the two files are of different "
            "models: write the checkpoint again"
        )
    return config


def load_compact(
    directory: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> SpeechEncoder:
    """Rebuild the ``SpeechEncoder`` stored in a compact checkpoint directory (in eval mode), in
    float32 whatever dtype its weights are stored in (or in ``dtype``).

    Checked first (:func:`check_compact`): a damaged or mismatched checkpoint raises ``ValueError``
    naming its files.
    """
    from safetensors.torch import load_file

    directory = Path(directory)
    config = check_compact(directory)
    model = SpeechEncoder(config, initialize=False)
    model.load_state_dict(load_file(str(directory / WEIGHTS_NAME), device=str(device)))
    model.to(device=device, dtype=dtype)
    return model.eval()


def truncation_depth(checkpoint: str | Path, parent: str | Path) -> int | None:
    """How many transformer layers compact ``checkpoint`` keeps if it is exactly compact ``parent``
    cut to its first layers (the architecture and every tensor of
    :func:`upstreams.pruning.truncate_state`'s cut; the parent's own depth for a copy); None when it
    is anything else, e.g. pruned inside its layers or fine-tuned. Such a cut computes the first
    ``depth + 1`` hidden states of its parent with the same operations."""
    from safetensors.torch import load_file

    from upstreams.pruning import truncate_state

    checkpoint, parent = Path(checkpoint), Path(parent)
    child, full = read_compact_config(checkpoint)[0], read_compact_config(parent)[0]
    if child.num_layers > full.num_layers:
        return None
    cut_config, cut_state = truncate_state(full, load_file(str(parent / WEIGHTS_NAME)), child.num_layers)
    if cut_config != child:
        return None
    state = load_file(str(checkpoint / WEIGHTS_NAME))
    if cut_state.keys() != state.keys() or not all(torch.equal(cut_state[k], state[k]) for k in state):
        return None
    return child.num_layers


def write_compression_notes(directory: str | Path, notes: dict[str, Any]) -> Path:
    """Add ``notes`` (JSON-serialisable) to ``directory/compression.json``, keeping what is there."""
    path = Path(directory) / NOTES_NAME
    write_json(path, {**read_compression_notes(directory), **notes})
    return path


def read_compression_notes(directory: str | Path | None) -> dict[str, Any]:
    """``directory/compression.json`` (empty when there is none, or ``directory`` is not a folder)."""
    path = Path(directory) / NOTES_NAME if directory else None
    if path is None or not path.is_file():
        return {}
    try:
        notes = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: unreadable compression notes ({err}); delete it or compress again") from err
    if not isinstance(notes, dict):
        raise ValueError(f"{path}: expected a JSON object; delete it or compress again")
    return notes

