"""Prunable HuBERT / WavLM / wav2vec 2.0 encoders, checkpoint import/export, s3prl registration.

Main entry points (imported lazily, so ``import upstreams`` stays cheap)::

    from upstreams import SpeechEncoder, EncoderConfig, load_upstream
    model = load_upstream("facebook/hubert-base-ls960")       # or a compact dir, torchaudio:HUBERT_BASE, a .pt
    hidden_states, frame_lengths = model(waveforms, lengths)  # num_layers + 1 states [batch, frame, D]
    model.set_masks({"layer.0.heads": head_mask, ...})        # see SpeechEncoder.mask_shapes()
    compact = model.prune(); compact.save("runs/compact")     # config.json + model.safetensors

s3prl: importing this package makes ``pruned_hubert``, ``pruned_wavlm``, ``pruned_wav2vec2`` (and
``*_local``) appear in ``s3prl.hub``: immediately if ``s3prl.hub`` is already imported, otherwise
the moment it is (a small import hook; importing s3prl itself takes seconds, so we do not).
``register()`` does it explicitly.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
from typing import Any

from core.registry import Registry

_EXPORTS = {
    "SpeechEncoder": "upstreams.model",
    "EncoderConfig": "upstreams.config",
    "expected_num_params": "upstreams.config",
    "mask_names": "upstreams.config",
    "load_upstream": "upstreams.importers",
    "from_transformers": "upstreams.importers",
    "from_transformers_model": "upstreams.importers",
    "from_torchaudio_model": "upstreams.importers",
    "from_checkpoint_file": "upstreams.importers",
    "save_compact": "upstreams.checkpoint",
    "load_compact": "upstreams.checkpoint",
    "measure_cost": "upstreams.cost",
    "record_cost": "upstreams.cost",
    "UnsafeCheckpointError": "upstreams.safe_load",
    "safe_torch_load": "upstreams.safe_load",
    "base_config": "upstreams.model",
    "large_config": "upstreams.model",
    "tiny_config": "upstreams.model",
}

#: Named architectures with random weights (``load_upstream("preset:hubert_base")``).
PRESETS: Registry = Registry("upstream preset")
for _name in (
    "hubert_base",
    "wavlm_base",
    "wav2vec2_base",
    "hubert_large",
    "wavlm_large",
    "wav2vec2_large",
    "tiny_hubert",
    "tiny_wavlm",
    "tiny_wav2vec2",
):
    PRESETS.register(_name, f"upstreams.model:{_name}")

__all__ = sorted([*_EXPORTS, "PRESETS", "register"])


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'upstreams' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__


def register(hub: Any = None) -> list[str]:
    """Add our entries to ``s3prl.hub`` (importing it); returns their names. Safe to call repeatedly."""
    from upstreams.s3prl_hub import register as register_entries

    return register_entries(hub)


class _RegisterAfterLoad(importlib.abc.Loader):
    """Runs the real loader of ``s3prl.hub``, then adds our entries to the fresh module."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        self.loader.exec_module(module)
        register(module)


class _S3prlHubWatcher(importlib.abc.MetaPathFinder):
    """Import hook: when ``s3prl.hub`` is first imported, wrap its loader with :class:`_RegisterAfterLoad`."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "s3prl.hub":
            return None
        spec = None
        for finder in sys.meta_path:  # let the other finders locate the real module
            find = getattr(finder, "find_spec", None)
            if finder is not self and find is not None:
                spec = find(fullname, path, target)
                if spec is not None:
                    break
        if spec is None or spec.loader is None:
            return None
        spec.loader = _RegisterAfterLoad(spec.loader)
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        return spec


def _register_with_s3prl() -> None:
    if "s3prl.hub" in sys.modules:
        register(sys.modules["s3prl.hub"])
    elif not any(isinstance(finder, _S3prlHubWatcher) for finder in sys.meta_path):
        sys.meta_path.insert(0, _S3prlHubWatcher())


_register_with_s3prl()
