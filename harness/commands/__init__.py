"""One module per ``harness`` subcommand; what several of them share lives here."""

from __future__ import annotations

from pathlib import Path


def set_torch_threads(threads: int | None) -> None:
    """Apply a ``--threads`` option: None keeps torch's choice, anything below 1 is refused."""
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def check_directories(**options: Path | str) -> None:
    """Refuse, before any work, an output option that is not a writable directory (or one that can
    be created): ``check_directories(records=path)`` names ``--records`` in the error."""
    import os

    for option, path in options.items():
        flag, path = f"--{option.replace('_', '-')}", Path(path)
        if path.exists() and not path.is_dir():
            raise ValueError(f"{flag} {path}: this is a file; give a directory (it is created if missing)")
        existing = next(p for p in (path, *path.absolute().parents) if p.exists())
        if not existing.is_dir():
            raise ValueError(f"{flag} {path}: {existing} is a file, so the directory cannot be created; give another path")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ValueError(f"{flag} {path}: {existing} is not writable; give a directory you can write to")


def defaulted(config_class: type, name: str, help: str) -> dict:
    """``default=`` and ``help=`` of an option whose default is field ``name`` of ``config_class``:
    the help ends with that default, so it is spelled nowhere else."""
    default = default_of(config_class, name)
    shown = f"{default:g}" if isinstance(default, float) else default
    return {"default": default, "help": f"{help} (default: {shown})"}


def default_of(config_class: type, name: str):
    """The default of field ``name`` of the dataclass ``config_class``: an option's default is its
    config field's, written once (lists are joined with commas, as the options take them)."""
    import dataclasses

    for item in dataclasses.fields(config_class):
        if item.name == name:
            if item.default is not dataclasses.MISSING:
                value = item.default
            elif item.default_factory is not dataclasses.MISSING:
                value = item.default_factory()
            else:
                raise ValueError(f"{config_class.__name__}.{name} has no default")
            return ",".join(str(v) for v in value) if isinstance(value, list | tuple) else value
    raise AttributeError(f"{config_class.__name__} has no field {name!r}")


def parse_head_seeds(text: str | None) -> list[int] | None:
    """``--head-seeds 0,1,2`` as sorted distinct integers (None when the option is not given)."""
    if text is None:
        return None
    try:
        seeds = sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError as err:
        raise ValueError(f"--head-seeds {text!r}: give whole numbers, e.g. 0,1,2") from err
    if not seeds:
        raise ValueError("--head-seeds is empty; give whole numbers, e.g. 0,1,2")
    return seeds

