"""Records -> one leaderboard table per corpus, with the SUPERB-style score.

Small pure functions over run records (:class:`core.records.Record`). A table holds one row per
upstream (name, compression method, teacher, sparsity, checkpoint hash) and one column per task of
its benchmark (:mod:`tasks.benchmarks`). The score of an upstream ``u`` over the tasks ``T`` is::

    1000 / |T| * sum_t (s_t(u) - s_t(FBANK)) / (s_t(ref) - s_t(FBANK))

where FBANK is the ``fbank`` row and ``ref`` is, per task, the best of the reference rows
(uncompressed upstreams: no compression method, not fbank). The same ratio serves lower-is-better
metrics, so FBANK scores 0 and an upstream that is the best reference on every task scores 1000.
A missing task is shown as missing and makes the score missing: it is never averaged over fewer tasks.

The tasks of a table are its benchmark's: the one given, else the declared benchmark whose corpus
and schedule match the records, else (no declared benchmark) the tasks found, which a note says.

Fields read from a record, through :class:`~core.records.Record` (all but the task, the main score
and ``upstream.name`` optional)::

    upstream.{name, ckpt, ckpt_sha256, params, macs_per_second (or macs / input_seconds), real_time_factor}
    upstream.compression.{method, teacher, sparsity, dir}
    corpus.{name, fingerprint}, config.preset, device, command, date
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

import pandas as pd

from core.paths import CONVEXITY_FILE
from core.records import Record, identity
from tasks.benchmarks import FBANK, Benchmark, find_benchmark

logger = logging.getLogger(__name__)

SCORE_SCALE = 1000.0
UP, DOWN = "↑", "↓"
IDENTITY_COLUMNS = ["upstream", "method", "teacher", "sparsity", "checkpoint"]
SCORE_COLUMN = f"SUPERB score {UP}"
PARAMS_COLUMN = f"params (M) {DOWN}"
MACS_COLUMN = f"MACs (G per s of audio) {DOWN}"
RTF_COLUMN = f"RTF {DOWN}"


@dataclass
class ConvexityCurves:
    """Graph convexity per hidden state of one compressed checkpoint (from its ``convexity.json``)."""

    source: str  # the row label of the upstream it belongs to
    path: Path
    curves: dict[str, list[float]]  # label type -> score per hidden state (0 = input to layer 1)
    kept_layers: int | None


@dataclass
class CorpusTable:
    """The leaderboard of one corpus (and downstream preset)."""

    corpus: str
    fingerprint: str | None
    preset: str | None
    frame: pd.DataFrame  # one row per upstream; NaN = missing
    higher_is_better: dict[str, bool]  # numeric column -> direction
    task_columns: dict[str, str]  # task name -> its column
    notes: list[str] = field(default_factory=list)
    benchmark: str | None = None  # the declared benchmark the table aggregates against (None: tasks found)
    convexity: list[ConvexityCurves] = field(default_factory=list)
    num_records: int = 0
    devices: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    latest_date: str | None = None

    @property
    def title(self) -> str:
        parts = [self.corpus]
        if self.preset:
            parts.append(f"preset {self.preset}")
        return " · ".join(parts)


# ------------------------------------------------------------------------------ record fields


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
        "teacher": _teacher_name(compression.get("teacher")),
        "sparsity": _scalar(compression.get("sparsity")),
        "checkpoint": str(digest)[:12] if digest else None,
    }


def _teacher_name(value: Any) -> str | float | int | None:
    """A local teacher directory or file by its name (``synth-hubert-tiny``), not by the absolute
    path of the machine that ran it; hub names and ``torchaudio:BUNDLE`` specs stay as they are.
    Rows stay distinct through the checkpoint hash."""
    if isinstance(value, str) and value.startswith("/"):
        return PurePath(value).name
    return _scalar(value)


def _scalar(value: Any) -> str | float | int | None:
    """Keep row keys hashable: numbers and strings as they are, anything else as compact JSON."""
    if value is None or isinstance(value, str | int | float):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def section_key(record: Record | Mapping[str, Any]) -> tuple[str, str | None, str | None]:
    """(corpus name, corpus fingerprint, downstream preset): scores are only compared within one."""
    return identity(as_record(record)).section


def row_label(identity: Mapping[str, Any]) -> str:
    """Short human name of a row, e.g. ``pruned_hubert (dphubert, sparsity 0.75) 3fa1c2d4e5f6``."""
    method, sparsity, checkpoint = (_present(identity.get(k)) for k in ("method", "sparsity", "checkpoint"))
    details = [str(method)] if method else []
    if sparsity is not None:
        details.append(f"sparsity {sparsity:g}" if isinstance(sparsity, int | float) else f"sparsity {sparsity}")
    label = identity["upstream"] + (f" ({', '.join(details)})" if details else "")
    return label + (f" {checkpoint}" if checkpoint else "")


def _present(value: Any) -> Any:
    """None for absent values (None or NaN, as pandas stores them), else the value."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def latest_records(records: Iterable[Record | Mapping[str, Any]]) -> list[Record]:
    """Keep one record per identity (corpus section, upstream checkpoint, task): the latest.

    When an upstream was evaluated twice on a task, the record with the later ``date`` wins; on
    equal dates (same second) the one later in ``records`` wins (``load_records`` sorts by file
    name, which starts with the UTC time). The order of first appearance is kept.
    """
    chosen: dict[Any, Record] = {}
    for record in map(as_record, records):
        key = identity(record)
        previous = chosen.get(key)
        if previous is None or record.date >= previous.date:
            chosen[key] = record
    return list(chosen.values())


# ------------------------------------------------------------------------------ score math


def task_ratio(value: float, fbank: float, reference: float) -> float:
    """``(value - fbank) / (reference - fbank)``: 0 at FBANK, 1 at the reference, either direction."""
    if reference == fbank:
        raise ValueError("the reference equals FBANK; the ratio is undefined")
    return (value - fbank) / (reference - fbank)


def best_row(rows: Sequence[Mapping[str, Any]], task: str, higher_is_better: bool) -> Mapping[str, Any] | None:
    """The row with the best non-missing figure on ``task`` (the first of equals); None when none has one."""
    present = [r for r in rows if r.get(task) is not None and not math.isnan(r[task])]
    if not present:
        return None
    return (max if higher_is_better else min)(present, key=lambda r: r[task])


def superb_score(
    values: Mapping[str, float | None],
    fbank: Mapping[str, float | None],
    reference: Mapping[str, float | None],
    tasks: Sequence[str],
) -> float | None:
    """SUPERB-style score of one row over ``tasks``; None when any value, FBANK or reference is missing."""
    if not tasks:
        return None
    ratios = []
    for task in tasks:
        value, base, ref = values.get(task), fbank.get(task), reference.get(task)
        if any(v is None or math.isnan(v) for v in (value, base, ref)) or ref == base:
            return None
        ratios.append(task_ratio(value, base, ref))
    return SCORE_SCALE / len(tasks) * sum(ratios)


# ------------------------------------------------------------------------------ tables


def build_leaderboard(
    records: Iterable[Record | Mapping[str, Any]], benchmark: Benchmark | None = None
) -> list[CorpusTable]:
    """One :class:`CorpusTable` per (corpus, fingerprint, preset), in order of first appearance.

    With ``benchmark``, only the sections of its corpus and schedule, with its tasks as columns;
    otherwise each section against its declared benchmark, if any (see the module docstring).
    """
    sections: dict[tuple, list[Record]] = {}
    for record in latest_records(records):
        sections.setdefault(section_key(record), []).append(record)
    fingerprints: dict[str, set] = {}
    for corpus, fingerprint, _ in sections:
        fingerprints.setdefault(corpus, set()).add(fingerprint)
    tables = []
    for (corpus, fingerprint, preset), section in sections.items():
        if benchmark is not None and not benchmark.matches(corpus, preset):
            logger.info("records of %s (preset %s) are not results of benchmark %s; left out", corpus, preset, benchmark.name)
            continue
        table = build_table(section, benchmark or find_benchmark(corpus, preset))
        if len(fingerprints[corpus]) > 1 and fingerprint:  # same name, different data: tell them apart
            table.corpus = f"{corpus} ({fingerprint[:8]})"
        tables.append(table)
    return tables


def build_table(records: Sequence[Record | Mapping[str, Any]], benchmark: Benchmark | None = None) -> CorpusTable:
    """The table of one section, against ``benchmark``'s tasks (None: the tasks found in ``records``).

    ``records`` should already be one per (upstream, task, seed), see :func:`latest_records`. A
    row's figure on a task is the mean over its head seeds; where the records keep per-utterance
    counts, each figure and the score get a 95 % interval and each compressed row a paired test
    against the reference (:mod:`leaderboard.intervals`).
    """
    if not records:
        raise ValueError("build_table needs at least one record")
    records = [as_record(r) for r in records]
    if benchmark is not None:
        others = sorted({r.task.name for r in records} - set(benchmark.tasks))
        records = [r for r in records if r.task.name in benchmark.tasks]
        if not records:
            raise ValueError(f"no records of benchmark {benchmark.name!r}'s tasks ({', '.join(benchmark.tasks)})")
    corpus, fingerprint, preset = section_key(records[0])
    rows: dict[tuple, dict[str, Any]] = {}
    directions: dict[str, bool] = {}
    metric_names: dict[str, str] = {}
    for record in records:
        identity = upstream_identity(record)
        row = rows.setdefault(tuple(identity.values()), {**identity, "_record": record, "_by_task": {}})
        task = record.task.name
        row["_by_task"].setdefault(task, []).append(record)
        directions[task] = record.task.higher_is_better
        metric_names[task] = record.task.main_metric
    for row in rows.values():  # the mean over head seeds (one seed: its value, exactly)
        for task, found in row["_by_task"].items():
            row[task] = sum(r.main_score for r in found) / len(found)
    if benchmark is not None:
        absent = [t for t in benchmark.tasks if t not in directions]
        if absent:
            _task_metadata(absent, directions, metric_names)
        tasks = list(benchmark.tasks)
    else:
        tasks = sorted(directions)
    task_columns = {t: f"{t.upper()} {_metric_title(metric_names[t])} {UP if directions[t] else DOWN}" for t in tasks}

    fbank_rows = [r for r in rows.values() if r["upstream"] == FBANK]
    fbank = {t: fbank_rows[0].get(t) for t in tasks} if fbank_rows else {}
    references = [r for r in rows.values() if r["upstream"] != FBANK and not r["method"]]
    reference_rows = {t: best_row(references, t, directions[t]) for t in tasks}
    reference = {t: reference_rows[t][t] if reference_rows[t] else None for t in tasks}
    notes = _score_notes(tasks, fbank_rows, fbank, reference, directions)
    if benchmark is None:
        notes.insert(0, "no declared benchmark for this corpus and preset: the columns are the tasks found in the records")
    else:
        notes += [f"benchmark {benchmark.name}: no result at all for {t}" for t in tasks if not any(t in r for r in rows.values())]
        if others:
            notes.append(f"records of tasks outside benchmark {benchmark.name} left out: {', '.join(others)}")

    spread = row_intervals(list(rows.values()), tasks, fbank_rows[0] if fbank_rows else None, reference_rows, notes)

    table_rows = []
    for row in rows.values():
        score = superb_score(row, fbank, reference, tasks)
        missing = [t for t in tasks if row.get(t) is None]
        if missing:
            notes.append(f"score missing for {row_label(row)}: no result for {', '.join(missing)}")
        table_rows.append(_frame_row(row, tasks, task_columns, score))
        if spread:
            for name, (low, high) in spread.get(id(row), {}).items():
                column = SCORE_COLUMN if name == SCORE_KEY else task_columns[name]
                table_rows[-1][low_column(column)], table_rows[-1][high_column(column)] = low, high
    columns = [*IDENTITY_COLUMNS, PARAMS_COLUMN, MACS_COLUMN, RTF_COLUMN, *task_columns.values(), SCORE_COLUMN]
    if spread:
        columns += [f(c) for c in [*task_columns.values(), SCORE_COLUMN] for f in (low_column, high_column)]
        columns.append(SEEDS_COLUMN)
        for row, out in zip(rows.values(), table_rows, strict=True):
            out[SEEDS_COLUMN] = max(len(found) for found in row["_by_task"].values())
    frame = pd.DataFrame(table_rows, columns=columns)
    frame = frame.sort_values("upstream", kind="stable")
    frame = frame.sort_values(SCORE_COLUMN, ascending=False, na_position="last", kind="stable").reset_index(drop=True)
    higher = {PARAMS_COLUMN: False, MACS_COLUMN: False, RTF_COLUMN: False, SCORE_COLUMN: True}
    higher.update({task_columns[t]: directions[t] for t in tasks})
    return CorpusTable(
        corpus=corpus, fingerprint=fingerprint, preset=preset, frame=frame, higher_is_better=higher,
        task_columns=task_columns, notes=notes, benchmark=benchmark.name if benchmark else None,
        convexity=find_convexity(rows.values()), num_records=len(records),
        devices=sorted({_device_text(r.device) for r in records} - {""}),
        commands=sorted({r.command for r in records if r.command}),
        latest_date=max((r.date for r in records), default=None) or None,
    )


SCORE_KEY = "_score"
SEEDS_COLUMN = "head seeds"
INTERVAL_NOTE = (
    "95 % intervals: percentile bootstrap ({resamples} resamples) over the test utterances, the same "
    "draws for every row (paired), and over each row's head seeds; WER and PER are recomputed from the "
    "summed edit counts of each resample, the score from the same resamples. A row with one head seed "
    "carries the test-set noise only. A difference whose interval contains 0 is not significant."
)


def low_column(column: str) -> str:
    return f"{column} 95% low"


def high_column(column: str) -> str:
    return f"{column} 95% high"


def row_intervals(
    rows: Sequence[dict[str, Any]], tasks: Sequence[str], fbank_row: dict[str, Any] | None,
    reference_rows: Mapping[str, dict[str, Any] | None], notes: list[str],
) -> dict[int, dict[str, tuple[float, float]]]:
    """Per row (by ``id``), the 95 % interval of each task figure and of the score; appends the
    method and each compressed row's paired test against the task's reference row to ``notes``.
    Empty when no record keeps per-utterance counts (older records): the table is then as before."""
    from leaderboard import intervals as ci

    samples: dict[int, dict[str, Any]] = {}
    for task in tasks:
        with_counts = [r for r in rows if task in r["_by_task"] and all(x.per_utterance for x in r["_by_task"][task])]
        if not with_counts:
            continue
        ids = with_counts[0]["_by_task"][task][0].per_utterance["ids"]
        resampler = ci.Resampler(len(ids))
        for row in with_counts:
            found = sorted(row["_by_task"][task], key=lambda r: (r.seed is None, r.seed))
            try:
                counts = [ci.Counts.from_record(r.per_utterance).aligned(ids) for r in found]
            except (KeyError, ValueError) as err:
                notes.append(f"no interval for {row_label(row)} on {task}: {err}")
                continue
            samples.setdefault(id(row), {})[task] = resampler.samples(counts)
    if not samples:
        return {}
    spread = {key: {task: ci.interval(s) for task, s in by_task.items()} for key, by_task in samples.items()}
    base = samples.get(id(fbank_row), {}) if fbank_row else {}
    best = {t: samples.get(id(r), {}).get(t) for t, r in reference_rows.items() if r is not None}
    best = {t: s for t, s in best.items() if s is not None}
    for row in rows:
        score = ci.score_samples(samples.get(id(row), {}), base, best, tasks, SCORE_SCALE)
        if score is not None and row.get("upstream") != FBANK:
            spread[id(row)][SCORE_KEY] = ci.interval(score)
    notes.append(INTERVAL_NOTE.format(resamples=ci.RESAMPLES))
    for row in rows:
        if not row.get("method"):
            continue
        for task in tasks:
            reference = reference_rows.get(task)
            mine, theirs = samples.get(id(row), {}).get(task), samples.get(id(reference), {}).get(task) if reference else None
            if mine is None or theirs is None:
                continue
            low, high = ci.interval(mine - theirs)
            verdict = "not significant" if low <= 0.0 <= high else "significant"
            notes.append(f"{row_label(row)} vs {row_label(reference)} on {task}: {row[task] - reference[task]:+.2f} "
                         f"[{low:+.2f}, {high:+.2f}], {verdict}")  # fmt: skip
    return spread


def _task_metadata(names: Sequence[str], directions: dict[str, bool], metric_names: dict[str, str]) -> None:
    """Direction and main metric of tasks no record reports, from the task registry (for their columns)."""
    from tasks.registry import get_task

    for name in names:
        task = get_task(name)
        directions[name] = task.higher_is_better
        metric_names[name] = task.main_metric


def _frame_row(row: Mapping[str, Any], tasks: Sequence[str], task_columns: Mapping[str, str], score: float | None) -> dict:
    record: Record = row["_record"]
    params, macs_per_second, rtf = record.cost("params"), record.macs_per_second(), record.cost("real_time_factor")
    out: dict[str, Any] = {column: row[column] for column in IDENTITY_COLUMNS}
    out[PARAMS_COLUMN] = params / 1e6 if params is not None else math.nan
    out[MACS_COLUMN] = macs_per_second / 1e9 if macs_per_second is not None else math.nan
    out[RTF_COLUMN] = rtf if rtf is not None else math.nan
    for task in tasks:
        out[task_columns[task]] = row.get(task, math.nan)
    out[SCORE_COLUMN] = score if score is not None else math.nan
    return out


def _metric_title(metric: str) -> str:
    """``wer`` -> ``WER``; longer names (``accuracy``) stay as they are."""
    return metric.upper() if len(metric) <= 3 else metric


def _score_notes(tasks, fbank_rows, fbank, reference, directions) -> list[str]:
    notes = []
    if not fbank_rows:
        notes.append("no FBANK (upstream fbank) records: every score is missing")
    for task in tasks:
        base, ref = fbank.get(task), reference.get(task)
        if fbank_rows and base is None:
            notes.append(f"no FBANK result for {task}: every score is missing")
        if ref is None:
            notes.append(f"no reference (uncompressed, non-FBANK upstream) result for {task}: every score is missing")
        elif base is not None and ref == base:
            notes.append(f"best reference equals FBANK on {task}: the ratio is undefined, every score is missing")
        elif base is not None and (ref < base if directions[task] else ref > base):
            notes.append(f"best reference is worse than FBANK on {task}: ratios on it are inverted")
    return notes


def _device_text(device: Any) -> str:
    if not isinstance(device, Mapping):
        return str(device or "")
    if device.get("type") == "cuda":
        return f"cuda ({device.get('name', '?')})"
    threads = device.get("threads")
    return f"{device.get('type', '?')}" + (f" ({threads} threads)" if threads else "")


# ------------------------------------------------------------------------------ convexity curves


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


def convexity_candidates(record: Record) -> list[Path]:
    """Where a record's compression outputs may hold ``convexity.json``: the compression dir, the checkpoint's dir."""
    places = [record.compression.get("dir")]
    ckpt = record.upstream.get("ckpt")
    if ckpt:
        places += [ckpt, str(Path(ckpt).parent)]
    found: list[Path] = []
    for place in places:
        if place and (Path(place) / CONVEXITY_FILE) not in found:
            found.append(Path(place) / CONVEXITY_FILE)
    return found


def find_convexity(rows: Iterable[Mapping[str, Any]]) -> list[ConvexityCurves]:
    """Curves of the compressed rows whose outputs hold a readable ``convexity.json`` (one per file)."""
    curves, seen = [], set()
    for row in rows:
        if not row.get("method"):
            continue
        for path in convexity_candidates(row["_record"]):
            if path in seen or not path.is_file():
                continue
            seen.add(path)
            try:
                scores, kept = read_convexity(path)
            except (OSError, ValueError, json.JSONDecodeError) as err:
                logger.warning("skipping convexity curves %s (%s)", path, err)
                continue
            curves.append(ConvexityCurves(row_label(row), path, scores, kept))
            break
    return curves
