"""Word and phone alignments as stored in manifest cells: JSON lists of ``[label, start_s, end_s]``."""

from __future__ import annotations

import json


def format_alignment(segments: list[tuple[str, float, float]]) -> str:
    """Serialise ``(label, start_s, end_s)`` segments (times rounded to 1 ms)."""
    return json.dumps([[label, round(start, 3), round(end, 3)] for label, start, end in segments], ensure_ascii=False)


def parse_alignment(cell: str) -> list[tuple[str, float, float]]:
    """Parse a ``word_alignment`` / ``phone_alignment`` cell into ``(label, start_s, end_s)`` tuples."""
    return [(label, float(start), float(end)) for label, start, end in json.loads(cell)] if cell else []
