"""Checkpoint identity: what makes two checkpoints the same model, as one SHA-256.

Records, the feature cache, the convexity scores cache and ``harness run``'s reuse checks all key
on :func:`checkpoint_hash`, so a checkpoint renamed or moved keeps its records and features, and a
retrained one at the same path does not inherit them.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from core.files import sha256_file, sha256_tree
from upstreams.checkpoint import CONFIG_NAME, WEIGHTS_NAME  # compact and transformers directories alike
from upstreams.importers import check_local_path


def checkpoint_hash(ckpt: str | os.PathLike | None) -> str | None:
    """Content identity of a checkpoint: SHA-256 of a file, or of every file under a directory
    (Hugging Face / compact style). A source that is not a local path (``preset:NAME``,
    ``torchaudio:BUNDLE``, a URL, a hub name ``org/name``) is identified by its text. ``None`` stays
    ``None``.

    Raises:
        FileNotFoundError: ``ckpt`` looks like a local path (or a checkpoint file name) but is missing.
    """
    if ckpt is None:
        return None
    path = Path(ckpt).expanduser()
    if path.is_file():
        return sha256_file(path)
    if path.is_dir():
        if (path / WEIGHTS_NAME).is_file() and (path / CONFIG_NAME).is_file():
            # a compact (or transformers) checkpoint: the weights and the architecture define it; files
            # written beside them later (cost.json, convexity.json, plots) do not change its identity
            digest = hashlib.sha256()
            for name in (CONFIG_NAME, WEIGHTS_NAME):
                digest.update(bytes.fromhex(sha256_file(path / name)))
            return digest.hexdigest()
        return sha256_tree(path)
    check_local_path(str(ckpt), "--ckpt")
    return "name:" + hashlib.sha256(str(ckpt).encode()).hexdigest()
