"""s3prl hub entries for our encoders: ``pruned_hubert``, ``pruned_wavlm``, ``pruned_wav2vec2`` and ``*_local``.

After ``upstreams.register()`` (or simply ``import upstreams`` before or after s3prl is imported)::

    from s3prl.nn import S3PRLUpstream, Featurizer
    upstream = S3PRLUpstream("pruned_hubert", path_or_url="runs/dphubert/compact")
    featurizer = Featurizer(upstream)

``path_or_url`` takes anything :func:`upstreams.load_upstream` accepts (a compact checkpoint directory,
a transformers directory or hub name, a fairseq / DPHuBERT file, ``torchaudio:BUNDLE``); the
``_local`` variants accept only an existing local path.

Importing this module adds nothing to ``s3prl.hub``: :func:`register` does, and it is the only
code that does. ``import upstreams`` arranges for it to run as soon as ``s3prl.hub`` is imported
(an import hook; the mechanism is described once, in ``upstreams/__init__.py``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence

from core.registry import UnknownNameError
from upstreams.importers import check_source, load_upstream

logger = logging.getLogger(__name__)

FAMILIES = ("hubert", "wavlm", "wav2vec2")


class PrunedUpstreamExpert(nn.Module):
    """s3prl upstream contract around a :class:`~upstreams.model.SpeechEncoder`.

    ``forward(list of 1-D waveforms) -> {"hidden_states": [num_layers + 1 x [batch, frame, D]],
    "last_hidden_state": ...}``; ``get_downsample_rates(key) -> 320``. Padding never changes an
    item's result, and the number of hidden states is fixed.

    Args:
        ckpt: checkpoint to load (see :func:`upstreams.load_upstream`).
        family: the family this entry serves; a checkpoint of another family is refused.
        local_only: refuse anything but an existing local path.
    """

    def __init__(self, ckpt: str | None, family: str, local_only: bool = False) -> None:
        super().__init__()
        entry = f"pruned_{family}{'_local' if local_only else ''}"
        if not ckpt:
            raise ValueError(f"{entry} needs a checkpoint: S3PRLUpstream({entry!r}, path_or_url=CKPT_DIR)")
        if local_only and not Path(ckpt).expanduser().exists():
            raise FileNotFoundError(f"{entry}: {ckpt} does not exist (the _local entries take a local path)")
        self.model = load_upstream(ckpt, family=family)
        if self.model.config.family != family:
            raise ValueError(
                f"{ckpt} holds a {self.model.config.family} model; use "
                f"pruned_{self.model.config.family} instead of {entry}"
            )
        self.model.transformer.layer_drop = 0.0
        logger.info("%s: %s, %d parameters", entry, self.model.config.describe(), self.model.num_params())

    def get_downsample_rates(self, key: str = "hidden_states") -> int:
        return self.model.config.downsample_rate

    def forward(self, wavs: list[Tensor]) -> dict[str, list[Tensor] | Tensor]:
        if len(wavs) == 0:
            raise ValueError("expected a non-empty list of 1-D waveforms")
        lengths = torch.tensor([len(wav) for wav in wavs], device=wavs[0].device)
        padded = pad_sequence([wav.reshape(-1) for wav in wavs], batch_first=True)
        minimum = self.model.config.receptive_field
        if padded.shape[1] < minimum:  # s3prl feeds 0.05 s; pad so at least one frame exists
            padded = nn.functional.pad(padded, (0, minimum - padded.shape[1]))
        hidden_states, frame_lengths = self.model(padded, lengths.clamp(min=minimum))
        if frame_lengths is not None:
            hidden_states = [repeat_last_valid_frame(h, frame_lengths) for h in hidden_states]
        return {
            "hidden_states": hidden_states,
            "last_hidden_state": self.model.last_hidden_state(hidden_states),
        }


def repeat_last_valid_frame(hidden: Tensor, frame_lengths: Tensor) -> Tensor:
    """``hidden [batch, frame, D]`` with each item's frames past its own length replaced by its
    last valid frame.

    s3prl keeps ``(samples - 1) // 320 + 1`` frames per item, one or two more than the conv stack
    makes, and pads the longest item by repeating its last frame. For a shorter item of a padded
    batch those extra frames would be the encoder's output at padded positions, which depends on
    what it was batched with; repeating its last valid frame gives every item the frames it has
    alone, whatever the batch.
    """
    frames = torch.arange(hidden.shape[1], device=hidden.device)[None, :]
    last = (frame_lengths.to(hidden.device) - 1).clamp(min=0)[:, None]
    index = torch.minimum(frames, last)
    return hidden.gather(1, index[:, :, None].expand_as(hidden))


def _entry(family: str, local_only: bool):
    def factory(
        ckpt: str | None = None, refresh: bool = False, model_config=None, **kwargs
    ) -> PrunedUpstreamExpert:
        # refresh / model_config come from s3prl's callers; our checkpoints need neither
        return PrunedUpstreamExpert(ckpt, family, local_only=local_only)

    factory.__name__ = f"pruned_{family}{'_local' if local_only else ''}"
    factory.__doc__ = f"s3prl entry: a {family} SpeechEncoder from a checkpoint ({'local path' if local_only else 'any source'})."
    return factory


ENTRIES = {
    f"pruned_{family}{suffix}": _entry(family, suffix == "_local")
    for family in FAMILIES
    for suffix in ("", "_local")
}


def check_entry_checkpoint(entry: str, ckpt: str | None) -> None:
    """Raise, before any work, what entry ``entry`` would raise for ``ckpt``: no checkpoint, a
    missing path, a damaged checkpoint or one of another family (:func:`upstreams.importers.check_source`)."""
    if not ckpt:
        raise ValueError(f"{entry} needs a checkpoint (--ckpt CKPT_DIR)")
    if entry.endswith("_local") and not Path(ckpt).expanduser().exists():
        raise FileNotFoundError(f"--ckpt {ckpt}: no such file or directory ({entry} takes a local path)")
    check_source(ckpt, "--ckpt", family=entry_family(entry))


def entry_family(entry: str) -> str:
    """The family entry ``entry`` (``pruned_wavlm_local``, ...) serves (``wavlm``)."""
    if entry not in ENTRIES:
        raise KeyError(f"{entry!r} is not one of our s3prl entries ({', '.join(sorted(ENTRIES))})")
    return entry.removeprefix("pruned_").removesuffix("_local")


def register(hub=None) -> list[str]:
    """Add our entries to ``s3prl.hub`` (imports it unless given); returns the names. Idempotent."""
    if hub is None:
        import s3prl.hub as hub
    for name, factory in ENTRIES.items():
        setattr(hub, name, factory)
    return sorted(ENTRIES)


# ------------------------------------------------------- names and trust checks (the harness uses these)


def known_upstreams() -> list[str]:
    """The upstream entries of ``s3prl.hub`` (ours included): what ``s3prl.hub.options()`` lists, less
    what is no entry at all (classes such as ``Path``, s3prl's conversion helpers)."""
    import inspect

    from s3prl import hub

    register(hub)  # ours: pruned_hubert, ... (``import upstreams`` has done it already where s3prl is imported after it)

    def is_entry(name: str) -> bool:
        value = getattr(hub, name)
        module = getattr(value, "__module__", "") or ""
        helper = module.startswith("s3prl.") and not module.endswith(".hubconf")
        return inspect.isfunction(value) and not helper

    return sorted(name for name in hub.options() if is_entry(name))


def check_upstream_name(name: str) -> None:
    """Raise :class:`UnknownNameError` listing the known names when ``name`` is not an s3prl hub entry."""
    known = known_upstreams()
    if name not in known:
        import difflib

        close = difflib.get_close_matches(name, known, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownNameError(f"unknown upstream {name!r}.{hint} Known upstreams: {', '.join(known)}.")


def check_checkpoint(name: str, ckpt: str | None, trust: bool = False) -> None:
    """Refuse to hand ``ckpt`` to s3prl's entry ``name`` unless it loads without running code.

    s3prl's own builders may unpickle a checkpoint (``torch.load(weights_only=False)``), so a file
    (or every weights file of a directory) must load as safetensors or with ``weights_only=True``
    first; a checkpoint that is no local path (a URL) cannot be checked before the entry downloads
    and opens it. ``trust`` (``--trust-checkpoint``) skips the check. Our own entries
    (``pruned_*``) never unpickle; for them, what loading would refuse (a missing, damaged or
    other-family checkpoint) is raised here, before any work.
    """
    from upstreams.importers import check_local_path
    from upstreams.s3prl_hub import ENTRIES, check_entry_checkpoint
    from upstreams.safe_load import UnsafeCheckpointError
    from upstreams.safe_load import check_checkpoint as check_safe

    if ckpt is not None:
        check_local_path(ckpt, "--ckpt")
    if name in ENTRIES:
        check_entry_checkpoint(name, ckpt)
        return
    if ckpt is None or trust:
        return
    advice = "pass --trust-checkpoint if you trust its source (unpickling can run any code)"
    path = Path(ckpt).expanduser()
    if not path.exists() and name.endswith("_local"):
        raise FileNotFoundError(f"--ckpt {ckpt}: no such file or directory ({name} takes a local path)")
    if not path.exists():
        raise UnsafeCheckpointError(
            f"--ckpt {ckpt}: not a local file or directory, so it cannot be checked before s3prl's {name} "
            f"fetches and opens it; download it and give the local path, or {advice}"
        )
    try:
        check_safe(path)
    except UnsafeCheckpointError as err:
        raise UnsafeCheckpointError(
            f"--ckpt {ckpt} does not load with torch.load(weights_only=True) ({err.reason}), and s3prl's {name} "
            f"may unpickle it; it was not opened: {advice}"
        ) from None
    except ValueError as err:  # neither safetensors nor a torch.save file: nothing tells what loading it runs
        raise ValueError(f"--ckpt: {err}; it could not be checked, so s3prl's {name} was not given it: {advice}") from None


def build_upstream(name: str, ckpt: str | None) -> nn.Module:
    """An ``s3prl.nn.S3PRLUpstream`` for hub entry ``name`` (local checkpoint ``ckpt`` if given), frozen.

    The engine checks ``ckpt`` first (:func:`check_checkpoint`, in :func:`setup`).
    """
    from s3prl.nn import S3PRLUpstream

    check_upstream_name(name)
    upstream = S3PRLUpstream(name, path_or_url=ckpt)
    upstream.requires_grad_(False)
    return upstream.eval()

