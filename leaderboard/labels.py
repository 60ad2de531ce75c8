"""What a leaderboard row is, in words: its identity (the row key), its kind and its label.

A row is one upstream checkpoint (name, compression method, teacher, sparsity, checkpoint hash).
Its kind says what it is to the score: ``fbank`` (the zero point), ``teacher`` (an uncompressed
upstream that a compressed row of the table was made from), ``uncompressed`` (another reference
upstream) or ``compressed``. Rows of the methods that change the depth show it, from the
compression's ``kept_layers`` and ``teacher_layers``: convexity (``5/6 layers``, and, when the
record says so (``compression.selected``), that the depth is the convexity rule's own pick), the
convexity-guided DPHuBERT (``convexity_dphubert, 4/6 layers``: the depth convexity chose, pruned
inside) and the fixed student of ``distill`` (``distill, 2/6 layers``: its depth).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import PurePath
from typing import Any

from core.records import Record, identity
from tasks.benchmarks import FBANK

FBANK_KIND, TEACHER, UNCOMPRESSED, COMPRESSED = "fbank", "teacher", "uncompressed", "compressed"
RULES_PICK = "rule's pick"


def as_record(record: Record | Mapping[str, Any]) -> Record:
    """A :class:`Record`, parsing a record object (checked, see ``Record.from_dict``) if needed."""
    return record if isinstance(record, Record) else Record.from_dict(record)


def upstream_identity(record: Record | Mapping[str, Any]) -> dict[str, Any]:
    """The row of a record: upstream name, compression method/teacher/sparsity, checkpoint hash."""
    record = as_record(record)
    compression = record.compression
    digest = identity(record).checkpoint
    return {
        "upstream": str(record.upstream["name"]),
        "method": _scalar(compression.get("method")),
        "teacher": teacher_name(compression.get("teacher")),
        "sparsity": _scalar(compression.get("sparsity")),
        "checkpoint": str(digest)[:12] if digest else None,
    }


def compression_details(record: Record) -> dict[str, Any]:
    """Everything a record says about its compression: ``upstream.compression``, completed by the
    checkpoint's own metadata (``upstream.checkpoint_metadata.compression``: depth, parameters, ...)."""
    metadata = record.upstream.get("checkpoint_metadata")
    stored = metadata.get("compression") if isinstance(metadata, dict) else None
    return {**(stored if isinstance(stored, dict) else {}), **record.compression}


def teacher_name(value: Any) -> str | float | int | None:
    """A local teacher directory or file by its name (``synth-hubert-tiny``), not by its path on
    the machine that ran it (absolute, ``./``-relative or deeper than a hub's ``org/name``); hub
    names and ``torchaudio:BUNDLE`` specs stay as they are. Rows stay distinct through the hash."""
    if isinstance(value, str) and ":" not in value:
        path = PurePath(value)
        if path.is_absolute() or value.startswith(".") or len(path.parts) > 2:
            return path.name
    return _scalar(value)


def _scalar(value: Any) -> str | float | int | None:
    """Keep row keys hashable: numbers and strings as they are, anything else as compact JSON."""
    if value is None or isinstance(value, str | int | float):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def present(value: Any) -> Any:
    """None for absent values (None or NaN, as pandas stores them), else the value."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def teachers_of(records: Iterable[Record]) -> set[str]:
    """The teachers the compressed records name (as :func:`teacher_name` shows them)."""
    return {str(teacher_name(r.compression["teacher"])) for r in records if r.compression.get("teacher")}


def describe(row: dict[str, Any], teachers: set[str]) -> None:
    """Give a table row (its identity and ``_record``) its kind, depth and pick, as ``_kind``,
    ``_depth`` (kept, of) and ``_selected``, which :func:`row_label` and :func:`method_cell` read."""
    record: Record = row["_record"]
    if row["upstream"] == FBANK:
        row["_kind"] = FBANK_KIND
    elif row.get("method"):
        row["_kind"] = COMPRESSED
    else:
        ckpt = record.upstream.get("ckpt")
        names = {row["upstream"], *([str(teacher_name(ckpt)), str(ckpt)] if ckpt else [])}
        row["_kind"] = TEACHER if names & teachers else UNCOMPRESSED
    details = compression_details(record) if row["_kind"] == COMPRESSED else {}
    kept, of = details.get("kept_layers"), details.get("teacher_layers")
    row["_depth"] = (int(kept), int(of) if isinstance(of, int | float) else None) if isinstance(kept, int | float) else None
    row["_selected"] = details.get("selected") if isinstance(details.get("selected"), bool) else None


def _depth_text(row: Mapping[str, Any]) -> str | None:
    depth = row.get("_depth")
    if not depth:
        return None
    kept, of = depth
    return f"{kept}/{of} layers" if of else f"{kept} layers"


def method_cell(row: Mapping[str, Any]) -> str | None:
    """The method column of a row: ``none (teacher)``, ``none (FBANK, zero point)``,
    ``convexity, 3/6 layers (rule's pick)``, ``convexity_dphubert, 4/6 layers``, ``dphubert``; the bare
    method of a row :func:`describe` has not seen."""
    kind, method = row.get("_kind"), present(row.get("method"))
    if kind == FBANK_KIND:
        return "none (FBANK, zero point)"
    if kind in (TEACHER, UNCOMPRESSED):
        return f"none ({kind})"
    text = ", ".join(str(part) for part in (method, _depth_text(row)) if part)
    return text + (f" ({RULES_PICK})" if row.get("_selected") else "") if text else None


def row_label(row: Mapping[str, Any]) -> str:
    """Short human name of a row, e.g. ``pruned_hubert (dphubert, sparsity 0.75) 3fa1c2d4e5f6``,
    ``pruned_hubert (teacher) e87fa1466e2d``, ``fbank (FBANK, zero point)``."""
    kind, sparsity, checkpoint = row.get("_kind"), present(row.get("sparsity")), present(row.get("checkpoint"))
    if kind == FBANK_KIND:
        details = ["FBANK, zero point"]
    elif kind in (TEACHER, UNCOMPRESSED):
        details = [kind]
    else:
        method = present(row.get("method"))
        details = [str(d) for d in (method, _depth_text(row)) if d] + ([RULES_PICK] if row.get("_selected") else [])
        if sparsity is not None:
            details.append(f"sparsity {sparsity:g}" if isinstance(sparsity, int | float) else f"sparsity {sparsity}")
    label = row["upstream"] + (f" ({', '.join(details)})" if details else "")
    return label + (f" {checkpoint}" if checkpoint else "")


def short_tag(row: Mapping[str, Any]) -> str | None:
    """A compressed row in a few characters, for a plot: its depth (``5/6``) or sparsity (``s 0.75``)."""
    if row.get("_kind") != COMPRESSED:
        return None
    depth, sparsity = row.get("_depth"), present(row.get("sparsity"))
    if depth:
        return f"{depth[0]}/{depth[1]}" if depth[1] else f"{depth[0]} layers"
    return f"s {sparsity:g}" if isinstance(sparsity, int | float) else None
