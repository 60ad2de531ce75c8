"""Import HuBERT / WavLM / wav2vec 2.0 checkpoints into :class:`~upstreams.model.SpeechEncoder`.

Supported sources (:func:`load_upstream` picks one from its argument):

- a compact checkpoint directory (``config.json`` + ``model.safetensors``, see ``upstreams.checkpoint``);
- a Hugging Face ``transformers`` model directory (HubertModel, WavLMModel, Wav2Vec2Model or one of
  their task models), or a hub name such as ``facebook/hubert-base-ls960`` (downloaded only then);
- ``torchaudio:HUBERT_BASE`` (any ``torchaudio.pipelines`` wav2vec 2.0 / HuBERT / WavLM bundle);
- a fairseq checkpoint (``{"cfg"|"args", "model"}``), an original WavLM checkpoint, or an s3prl
  converted one (``{"model_cfg", "task_cfg", "model_weight"}``);
- a DPHuBERT checkpoint (``{"state_dict", "config"}`` with torchaudio-style config keys);
- ``arch:NAME``: a named architecture of ``upstreams.model.ARCHITECTURES`` with random weights
  (``preset:NAME`` is the old spelling of the same).

Every ``.pt`` / ``.pth`` / ``.bin`` file goes through :func:`upstreams.safe_load.safe_torch_load`.
Each converter is a pure function ``(config, state dict) -> (EncoderConfig, state dict)``;
weights that an encoder has no use for (CTC heads, quantizers, HuBERT label embeddings) are dropped
with a log line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path

from upstreams.checkpoint import check_compact, is_compact_checkpoint, load_compact
from upstreams.config import EncoderConfig
from upstreams.convert import build_encoder, check_family
from upstreams.import_fairseq import convert_fairseq, parse_conv_layers
from upstreams.import_torchaudio import convert_torchaudio, from_torchaudio_bundle, from_torchaudio_model
from upstreams.import_transformers import convert_transformers, from_transformers, from_transformers_model
from upstreams.model import ARCHITECTURES, SpeechEncoder
from upstreams.safe_load import safe_torch_load

__all__ = [
    "build_encoder",
    "convert_fairseq",
    "convert_torchaudio",
    "convert_transformers",
    "from_checkpoint_file",
    "from_torchaudio_bundle",
    "from_torchaudio_model",
    "from_transformers",
    "from_transformers_model",
    "load_upstream",
    "parse_conv_layers",
]

logger = logging.getLogger(__name__)

_FILE_SUFFIXES = {".pt", ".pth", ".ckpt", ".bin", ".safetensors", ".json"}
#: ``arch:NAME`` names a random-weight architecture; ``preset:NAME`` is its old spelling, still read.
_ARCHITECTURE_PREFIXES = ("arch:", "preset:")


def from_checkpoint_file(path: str | Path, family: str | None = None) -> SpeechEncoder:
    """Import a ``.pt`` / ``.pth`` file (fairseq, WavLM, s3prl-converted or DPHuBERT), never unpickling code."""
    path = Path(path)
    checkpoint = safe_torch_load(path)
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{path} holds a {type(checkpoint).__name__}, not a checkpoint dict")
    if (
        "state_dict" in checkpoint
        and isinstance(checkpoint.get("config"), Mapping)
        and "encoder_num_layers" in checkpoint["config"]
    ):
        params = checkpoint["config"]
        wavlm = any(key in params for key in ("encoder_remaining_heads", "encoder_total_num_heads", "encoder_num_buckets"))
        family = check_family(family, wavlm, f"{path} (a DPHuBERT checkpoint)") or ("wavlm" if wavlm else "hubert")
        config, state = convert_torchaudio(params, checkpoint["state_dict"], family, str(path))
    elif "model_weight" in checkpoint or (
        "model" in checkpoint and ("cfg" in checkpoint or "args" in checkpoint)
    ):
        config, state = convert_fairseq(checkpoint, family, str(path))
    else:
        keys = sorted(checkpoint)[:8]
        raise ValueError(
            f"{path}: unrecognised checkpoint layout (top-level keys {keys}); expected DPHuBERT "
            "{state_dict, config}, fairseq {cfg|args, model} or s3prl {model_cfg, model_weight}. "
            "A bare state dict has no architecture: save it with its config."
        )
    return build_encoder(config, state, str(path))


def looks_like_path(text: str) -> bool:
    """Whether a source is meant as a local path rather than a hub name (``org/name``), a
    ``torchaudio:``/``arch:`` name or a URL: it starts with ``.``, ``/`` or ``~``, holds a backslash
    or more than one ``/``, ends in a checkpoint suffix, or its first folder exists here
    (``runs/typo`` when ``runs/`` exists)."""
    if text.startswith(("torchaudio:", *_ARCHITECTURE_PREFIXES)) or "://" in text:
        return False
    if text.startswith((".", "/", "~")) or "\\" in text or text.count("/") > 1:
        return True
    if Path(text).suffix in _FILE_SUFFIXES:
        return True
    return "/" in text and Path(text.split("/", 1)[0]).expanduser().is_dir()


def check_local_path(text: str | Path, option: str) -> None:
    """Raise ``FileNotFoundError`` naming ``option`` when ``text`` looks like a local path
    (:func:`looks_like_path`) that does not exist: a mistyped path is never taken for a hub name."""
    text = str(text)
    if looks_like_path(text) and not Path(text).expanduser().exists():
        raise FileNotFoundError(
            f"{option} {text}: no such file or directory (checkpoint not found; check the path, a Hugging Face "
            "hub name is ORG/NAME)"
        )


def check_source(source: str | Path, option: str, family: str | None = None) -> EncoderConfig | None:
    """Check a ``--teacher`` or ``--ckpt`` before any work, raising the error loading it would raise;
    returns its architecture when it is local (None for hub names and ``torchaudio:`` bundles, which
    are checked when they are fetched).

    A path-like source must exist; a compact checkpoint is checked without reading its weights
    (:func:`~upstreams.checkpoint.check_compact`), another local checkpoint is loaded. With
    ``family``, a model of another family is refused.
    """
    text = str(source)
    check_local_path(text, option)
    path = Path(text).expanduser()
    if text.startswith(_ARCHITECTURE_PREFIXES):
        config = load_upstream(text).config
    elif not path.exists():
        return None
    elif is_compact_checkpoint(path):
        config = check_compact(path)
    else:
        config = load_upstream(path, family=family).config
    if family is not None and config.family != family:
        raise ValueError(f"{option} {text} holds a {config.family} model, not {family}: use pruned_{config.family} for it")
    return config


def load_upstream(
    source: str | Path | SpeechEncoder, family: str | None = None, device: str = "cpu"
) -> SpeechEncoder:
    """Load an encoder from any supported source (see the module docstring), in eval mode.

    Args:
        source: compact checkpoint dir, transformers dir or hub name, ``torchaudio:BUNDLE``, a
            fairseq / WavLM / DPHuBERT ``.pt``/``.pth`` file, ``arch:NAME`` (a named architecture
            with random weights; ``preset:NAME`` is the old spelling), or a ``SpeechEncoder``
            (returned as is).
        family: ``"hubert"``, ``"wav2vec2"`` or ``"wavlm"`` for formats that cannot tell HuBERT from
            wav2vec 2.0 (DPHuBERT files default to HuBERT).
        device: where to put the weights.
    """
    if isinstance(source, SpeechEncoder):
        return source
    text = str(source)
    path = Path(text).expanduser()
    if text.startswith("torchaudio:"):
        model = from_torchaudio_bundle(text.split(":", 1)[1])
    elif text.startswith(_ARCHITECTURE_PREFIXES):
        logger.warning("%s has random weights", text)
        model = ARCHITECTURES.get(text.split(":", 1)[1])()
    elif path.is_dir():
        if is_compact_checkpoint(path):
            model = load_compact(path)
        elif (path / "config.json").is_file():
            model = from_transformers(path)
        else:
            raise ValueError(
                f"{path} is neither a compact checkpoint nor a transformers model directory (no config.json)"
            )
    elif path.is_file():
        if path.suffix == ".safetensors":
            raise ValueError(
                f"{path}: a bare safetensors file has no architecture; pass its directory with config.json"
            )
        model = from_checkpoint_file(path, family)
    elif re.fullmatch(r"[\w.-]+/[\w.-]+", text) and not looks_like_path(text):
        model = from_transformers(text)
    else:
        check_local_path(text, "checkpoint")
        raise FileNotFoundError(
            f"upstream {text!r} not found: give a checkpoint directory or file, a Hugging Face hub name "
            "(org/name), torchaudio:BUNDLE or arch:NAME"
        )
    return model.to(device).eval()
