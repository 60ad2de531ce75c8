"""Convexity scores kept on disk by what they are a function of, so that every compression scoring
the same teacher on the same corpus (convexity at each depth, the hybrid at each budget, a rerun
after ``runs/`` was cleared) reads them instead of scoring again.

An entry is ``CACHE/KEY.json`` with the :class:`~harness.compression.convexity.method.LayerScores` fields;
KEY hashes the teacher's content (``harness.evaluation.cache.checkpoint_hash``), the corpus' manifests
(``corpus_fingerprint``), the label types, the number of segments per label and the seed. Scores
with probes serve a request without them, not the reverse. Entries are written whole, then
renamed; one that cannot be read is scored again and overwritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from core.files import write_json

logger = logging.getLogger(__name__)

#: Bumped when what an entry holds, or how the scores are computed, changes.
SCORES_VERSION = 1


def scores_key(teacher_sha256: str, corpus_fingerprint: str, label_types: tuple[str, ...], max_points: int, seed: int) -> str:
    """The entry name of one scoring."""
    what = {"version": SCORES_VERSION, "teacher": teacher_sha256, "corpus": corpus_fingerprint,
            "labels": list(label_types), "max_points": max_points, "seed": seed}  # fmt: skip
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:24]


def load_scores(cache: str | os.PathLike, key: str, probes: bool) -> dict | None:
    """The cached fields, or None when there is no usable entry (missing, unreadable, or without
    the probes asked for)."""
    path = Path(cache) / f"{key}.json"
    if not path.is_file():
        return None
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
        fields = {name: entry[name] for name in ("probes", "influence", "counts", "by_average")}
    except (OSError, ValueError, KeyError) as err:
        logger.warning("%s: unreadable convexity scores (%s); scoring again", path, err)
        return None
    if probes and not entry.get("with_probes"):
        return None
    if not probes:
        fields["probes"], fields["influence"] = {}, {}
    return fields


def save_scores(cache: str | os.PathLike, key: str, fields: dict, with_probes: bool) -> Path:
    """Write one entry (whole, then renamed)."""
    path = Path(cache) / f"{key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {**fields, "with_probes": with_probes})
    return path
