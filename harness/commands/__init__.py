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
