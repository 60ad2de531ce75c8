"""Graph convexity curves of the compressed checkpoints of a table, from their records.

A record made from a convexity checkpoint carries the curves that chose it, in its compression
section (``upstream.compression.convexity_curves``: label type -> convexity per hidden state,
copied from the checkpoint's compression notes, written by
``harness.compression.convexity.curves``). Records made before checkpoints had notes do not; for
those, the curves are read from the ``convexity.json`` beside the compression outputs the record
names (``upstream.compression.dir``, ``upstream.ckpt``), relative to the repository they were made
in (older ones by an absolute path): looked for under the working directory's repository, then
under the repository and the folder of the record.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.paths import CONVEXITY_FILE, locate, repo_root
from core.records import Record
from leaderboard.labels import row_label

logger = logging.getLogger(__name__)


@dataclass
class ConvexityCurves:
    """Graph convexity per hidden state of one compressed checkpoint (from its ``convexity.json``)."""

    source: str  # the row label of the upstream it belongs to
    path: Path  # the record that carries them, or (older records) the convexity.json they were read from
    curves: dict[str, list[float]]  # label type -> score per hidden state (0 = input to layer 1)
    kept_layers: int | None


def read_convexity(path: str | Path) -> tuple[dict[str, list[float]], int | None]:
    """Parse a ``convexity.json``: ``{"<label type>": [score per hidden state], ..., "kept_layers": N}``.

    Curves may also sit under a ``"curves"`` key. Raises ValueError naming the file when malformed.
    """
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of label type -> scores per layer")
    source = data["curves"] if isinstance(data.get("curves"), dict) else data
    curves = {
        str(name): [float(v) for v in values]
        for name, values in source.items()
        if isinstance(values, list) and values and all(isinstance(v, int | float) for v in values)
    }
    if not curves:
        raise ValueError(f"{path}: no curves (label type -> list of scores per layer)")
    kept = data.get("kept_layers")
    return curves, int(kept) if isinstance(kept, int | float) else None


def record_bases(record: Record) -> list[Path]:
    """Where a relative path of ``record`` may be relative to: the working directory's repository,
    the repository holding the record's file, the record's folder."""
    bases = [repo_root()]
    if record.path is not None:
        folder = record.path.parent.absolute()
        bases += [repo_root(folder), folder]
    return list(dict.fromkeys(bases))


def convexity_candidates(record: Record) -> list[Path]:
    """Where a record's compression outputs may hold ``convexity.json``: the compression dir, the checkpoint's dir."""
    places = [record.compression.get("dir")]
    ckpt = record.upstream.get("ckpt")
    if ckpt:
        places += [ckpt, str(Path(ckpt).parent)]
    bases = record_bases(record)
    found: list[Path] = []
    for place in places:
        if place and (candidate := locate(Path(place) / CONVEXITY_FILE, bases)) not in found:
            found.append(candidate)
    return found


#: The key of the curves in a record's compression section (harness.compression.convexity.curves).
RECORD_KEY = "convexity_curves"


def find_convexity(rows: Iterable[Mapping[str, Any]]) -> list[ConvexityCurves]:
    """Curves of the compressed rows: from their records, or, for a record made before records
    carried them, from a readable ``convexity.json`` of its outputs (one entry per source)."""
    curves, seen = [], set()
    for row in rows:
        if not row.get("method"):
            continue
        record = row["_record"]
        carried = record.compression.get(RECORD_KEY)
        if record.compression.get("cut_for"):
            continue  # a per-task cut: its curve is one of its compression's, shown with those
        if isinstance(carried, dict) and carried:
            key = json.dumps(carried, sort_keys=True)
            if key not in seen:
                seen.add(key)
                scores = {str(label): [float(v) for v in curve] for label, curve in carried.items()}
                curves.append(ConvexityCurves(row_label(row), record.path, scores, record.compression.get("kept_layers")))
            continue
        found = _from_outputs(row, seen)
        if found is not None:
            curves.append(found)
    return curves


def _from_outputs(row: Mapping[str, Any], seen: set) -> ConvexityCurves | None:
    """The curves of an older record, from the first readable ``convexity.json`` of its outputs."""
    for path in convexity_candidates(row["_record"]):
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        try:
            scores, kept = read_convexity(path)
        except (OSError, ValueError, json.JSONDecodeError) as err:
            logger.warning("skipping convexity curves %s (%s)", path, err)
            continue
        return ConvexityCurves(row_label(row), path, scores, kept)
    return None
