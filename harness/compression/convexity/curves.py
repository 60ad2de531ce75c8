"""The convexity curves file, ``convexity.json``: its one writer and its one reader, and the
curves' way into the compression metadata of each checkpoint they chose.

A convexity compression (``convexity`` and ``convexity_dphubert``) writes, beside its compact
checkpoint(s)::

    convexity.json  {"<label type>": [convexity per hidden state, 0 = the input to layer 1], ...,
                     "kept_layers": K, "selection": {rule, reason, ...}, "counts": {...},
                     "corpus": ..., "seconds": ..., "average": "classes"|"pairs",
                     "by_average": {"classes": {label: curve}, "pairs": {...}},
                     and for ``convexity``: "linear_probe": {...}, "block_influence": {...}}

The curves themselves also go into each compact checkpoint the curves chose, in its compression
notes (``compression.json``, key ``convexity_curves``; :func:`attach_curves`), which every record
made from the checkpoint copies into its ``compression`` section; the leaderboard reads them from
records (:mod:`leaderboard.convexity`), never from run folders. The notes are not part of the
checkpoint's identity (its config and weights), so a cut keeps the hash it had before they existed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.files import write_json
from core.paths import CONVEXITY_FILE

#: The key of the curves in a compact checkpoint's ``compression`` metadata (and in a record's).
METADATA_KEY = "convexity_curves"


@dataclass(frozen=True)
class CurvesFile:
    """What a ``convexity.json`` says: the curves per label type, the depth kept and by what rule."""

    curves: dict[str, list[float]]
    kept_layers: int | None  # None in a file that records no choice
    rule: str
    data: dict[str, Any]  # the whole file


def write_curves_file(out: str | os.PathLike, curves: dict[str, list[float]], kept_layers: int, **details: Any) -> Path:
    """Write ``out/convexity.json`` (atomically): the curves first, then ``kept_layers`` and the
    ``details`` (selection, counts, corpus, seconds, average, by_average, probes, ...) in order."""
    path = Path(out) / CONVEXITY_FILE
    write_json(path, {**curves, "kept_layers": kept_layers, **details})
    return path


def read_curves_file(out: str | os.PathLike) -> CurvesFile:
    """Read ``out/convexity.json``; a file without curves raises ValueError naming it."""
    path = Path(out) / CONVEXITY_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read the convexity curves ({err}); run the compression again") from err
    curves = {name: value for name, value in data.items() if isinstance(value, list)}  # the details are not lists
    if not curves:
        raise ValueError(f"{path}: no convexity curves (label type -> score per hidden state); run the compression again")
    kept = data.get("kept_layers")
    return CurvesFile(curves, kept if isinstance(kept, int) else None, data.get("selection", {}).get("rule", "peak"), data)



def attach_curves(checkpoint: str | os.PathLike, curves: dict[str, list[float]]) -> None:
    """Note ``curves`` in ``checkpoint``'s compression notes, for the records made from it."""
    from upstreams.checkpoint import write_compression_notes

    write_compression_notes(checkpoint, {METADATA_KEY: {label: [float(v) for v in curve] for label, curve in curves.items()}})
