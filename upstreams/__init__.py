"""Prunable HuBERT / WavLM / wav2vec 2.0 encoders, checkpoint import/export, s3prl registration.

Main entry points (imported lazily, so ``import upstreams`` stays cheap)::

    from upstreams import load_upstream, measure_cost, record_cost, save_compact
    model = load_upstream("facebook/hubert-base-ls960")       # or a compact dir, torchaudio:HUBERT_BASE, a .pt
    hidden_states, frame_lengths = model(waveforms, lengths)  # num_layers + 1 states [batch, frame, D]
    model.set_masks({"layer.0.heads": head_mask, ...})        # see SpeechEncoder.mask_shapes()
    compact = model.prune()
    save_compact(compact, "runs/compact")                     # config.json + model.safetensors
    record_cost("runs/compact", measure_cost(compact))        # cost.json, only when asked (slow)

Layout, one way: each module imports only those above it here, lazy imports included
(tests/test_upstreams_layout.py checks it)::

    config, components, safe_load    import nothing of upstreams
    pruning                          -> config
    model                            -> pruning, components, config
    checkpoint                       -> model, config
    convert                          -> model, config
    import_*                         -> convert, model, config, safe_load
    importers                        -> import_*, convert, checkpoint, model, safe_load
    cost                             -> importers, checkpoint, model
    s3prl_hub                        -> importers
    upstreams (this file)            -> s3prl_hub; and, lazily by name, what it exports
    __main__                         -> cost, importers, checkpoint

``model`` builds modules from a config and knows no files; ``pruning`` is pure functions over a
config, a state dict and masks; ``checkpoint`` reads and writes compact checkpoints and never
measures cost. ``ARCHITECTURES`` (``upstreams.model``) names the random-weight architectures that
``load_upstream("arch:NAME")`` builds; ``PRESETS`` is its old name, the same object.

s3prl registration
------------------
Our s3prl entries (``pruned_hubert``, ``pruned_wavlm``, ``pruned_wav2vec2`` and their ``*_local``
variants, see ``upstreams.s3prl_hub``) are added to ``s3prl.hub`` by one function,
``upstreams.s3prl_hub.register``. Importing this package arranges for it to run:

- if ``s3prl.hub`` is already imported, at once;
- otherwise an import hook (:class:`_S3prlHubWatcher`, first on ``sys.meta_path``) waits for the
  first import of ``s3prl.hub``, lets the real loader run it, then calls ``register`` on the fresh
  module, and removes itself.

So after ``import upstreams``, ``S3PRLUpstream("pruned_hubert", path_or_url=...)`` works whether
s3prl was imported before or after it. A hook rather than importing s3prl here, because importing
s3prl takes seconds (and torch with it) and most users of this package never touch it.
:func:`register` is the same function, called explicitly (it imports ``s3prl.hub``).
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
from typing import Any

_EXPORTS = {
    "SpeechEncoder": "upstreams.model",
    "ARCHITECTURES": "upstreams.model",
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
    "is_complete_checkpoint": "upstreams.checkpoint",
    "measure_cost": "upstreams.cost",
    "record_cost": "upstreams.cost",
    "read_stored_cost": "upstreams.cost",
    "UnsafeCheckpointError": "upstreams.safe_load",
    "safe_torch_load": "upstreams.safe_load",
    "base_config": "upstreams.model",
    "large_config": "upstreams.model",
    "tiny_config": "upstreams.model",
}

#: Old names still exported: old name -> current name in ``_EXPORTS``.
_ALIASES = {"PRESETS": "ARCHITECTURES"}

__all__ = sorted([*_EXPORTS, *_ALIASES, "register"])


def __getattr__(name: str) -> Any:
    name = _ALIASES.get(name, name)
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'upstreams' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__


def register(hub: Any = None) -> list[str]:
    """Add our entries to ``s3prl.hub`` (importing it unless given); returns their names. Idempotent.

    The explicit form of what ``import upstreams`` arranges (see the module docstring): it calls
    :func:`upstreams.s3prl_hub.register`, the one function that adds the entries.
    """
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
    """Register at once if ``s3prl.hub`` is imported, else install the hook (once)."""
    if "s3prl.hub" in sys.modules:
        register(sys.modules["s3prl.hub"])
    elif not any(isinstance(finder, _S3prlHubWatcher) for finder in sys.meta_path):
        sys.meta_path.insert(0, _S3prlHubWatcher())


_register_with_s3prl()
