"""One module per ``harness`` subcommand; what several of them share lives here."""

from __future__ import annotations


def set_torch_threads(threads: int | None) -> None:
    """Apply a ``--threads`` option: None keeps torch's choice, anything below 1 is refused."""
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


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
