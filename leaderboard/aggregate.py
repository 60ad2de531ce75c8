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

Rows say what they are (:mod:`leaderboard.labels`: ``none (teacher)``, ``none (FBANK, zero point)``,
``convexity, 3/6 layers (rule's pick)``), the notes name the reference row of each task and the zero
point, and a table carries its rows as points of size against score (:mod:`leaderboard.points`)
and its compressed rows grouped by parameter budget (:mod:`leaderboard.budgets`).

Fields read from a record, through :class:`~core.records.Record` (all but the task, the main score
and ``upstream.name`` optional)::

    upstream.{name, ckpt, ckpt_sha256, params, macs_per_second (or macs / input_seconds), real_time_factor}
    upstream.compression.{method, teacher, sparsity, dir, kept_layers, teacher_layers, selected}
        (completed by upstream.checkpoint_metadata.compression)
    corpus.{name, fingerprint}, config.preset, device, command, date, per_utterance
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from core.records import Record, identity
from leaderboard.budgets import Budget, build_budgets
from leaderboard.convexity import ConvexityCurves, find_convexity
from leaderboard.labels import (
    as_record,
    describe,
    method_cell,
    row_label,
    short_tag,
    teachers_of,
    upstream_identity,
)
from leaderboard.points import Point
from leaderboard.superb_points import POINTS_NOTE, SUPERB_REFERENCES, points_interval, superb_points
from leaderboard.task_cuts import TaskCut, build_task_cuts, is_cut
from tasks.benchmarks import FBANK, RUN_BENCHMARK, Benchmark, find_benchmark

logger = logging.getLogger(__name__)

SCORE_SCALE = 1000.0
UP, DOWN = "↑", "↓"
IDENTITY_COLUMNS = ["upstream", "method", "teacher", "sparsity", "checkpoint"]
SCORE_COLUMN = f"SUPERB score {UP}"
PARAMS_COLUMN = f"params (M) {DOWN}"
MACS_COLUMN = f"MACs (G per s of audio) {DOWN}"
RTF_COLUMN = f"RTF {DOWN}"
SUPERB_MACS_COLUMN = f"MACs (G, SUPERB's 32 test-clean utterances) {DOWN}"  # LibriSpeech records only


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
    points: list[Point] = field(default_factory=list)  # one per row, for the Pareto plot
    budgets: list[Budget] = field(default_factory=list)  # the compressed rows by parameter budget
    task_cuts: list[TaskCut] = field(default_factory=list)  # each task on its own convexity cut
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


def section_key(record: Record | Mapping[str, Any]) -> tuple[str, str | None, str | None]:
    """(corpus name, corpus fingerprint, downstream preset): scores are only compared within one."""
    return identity(as_record(record)).section


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
    records: Iterable[Record | Mapping[str, Any]], benchmark: Benchmark | None = None, tasks: Sequence[str] | None = None
) -> list[CorpusTable]:
    """One :class:`CorpusTable` per (corpus, fingerprint, preset), in order of first appearance.

    With ``benchmark``, only the sections of its corpus and schedule, with its tasks as columns;
    with ``tasks``, every section with those columns (the table ``harness run --tasks`` writes);
    otherwise each section against its declared benchmark, if any (see the module docstring).
    """
    if benchmark is not None and tasks:
        raise ValueError("give a benchmark or tasks, not both")
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
        if tasks:
            declared = Benchmark(RUN_BENCHMARK, tuple(tasks), corpus=corpus, schedule=preset)
        else:
            declared = benchmark or find_benchmark(corpus, preset)
        table = build_table(section, declared)
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
    cut_records = [r for r in records if is_cut(r)]  # per-task cuts: a view of their own, not rows
    records = [r for r in records if not is_cut(r)] or records
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
    teachers = teachers_of(records)
    for row in rows.values():  # the mean over head seeds (one seed: its value, exactly)
        describe(row, teachers)
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
    notes = _reference_notes(tasks, reference_rows, fbank_rows) + _score_notes(tasks, fbank_rows, fbank, reference, directions)
    if benchmark is None:
        notes.insert(0, "no declared benchmark for this corpus and preset: the columns are the tasks found in the records")
    else:
        notes += [f"benchmark {benchmark.name}: no result at all for {t}" for t in tasks if not any(t in r for r in rows.values())]
        if others:
            notes.append(f"records of tasks outside benchmark {benchmark.name} left out: {', '.join(others)}")

    anchors: list[str] = []  # the tasks whose reference beats FBANK significantly: the score is over them
    spread = row_intervals(list(rows.values()), tasks, fbank_rows[0] if fbank_rows else None, reference_rows, notes, anchors)
    scored_tasks = anchors if spread else tasks

    table_rows, points = [], []
    for row in rows.values():
        score = superb_score(row, fbank, reference, scored_tasks)
        missing = [t for t in tasks if row.get(t) is None]
        if missing:
            notes.append(f"score missing for {row_label(row)}: no result for {', '.join(missing)}")
        table_rows.append(_frame_row(row, tasks, task_columns, score))
        points.append(_point(row, score, spread.get(id(row), {}).get(SCORE_KEY)))
        if spread:
            for name, (low, high) in spread.get(id(row), {}).items():
                column = SCORE_COLUMN if name == SCORE_KEY else task_columns[name]
                table_rows[-1][low_column(column)], table_rows[-1][high_column(column)] = low, high
    points_columns = _add_superb_points(table_rows, tasks, task_columns, notes) if benchmark and benchmark.superb_points else []
    costs = [PARAMS_COLUMN, MACS_COLUMN, RTF_COLUMN]
    if any(out.get(SUPERB_MACS_COLUMN) is not None for out in table_rows):
        costs.append(SUPERB_MACS_COLUMN)
    columns = [*IDENTITY_COLUMNS, *costs, *task_columns.values(), *points_columns, SCORE_COLUMN]
    if spread:
        columns += [f(c) for c in [*task_columns.values(), *points_columns, SCORE_COLUMN] for f in (low_column, high_column)]
        columns.append(SEEDS_COLUMN)
        for row, out in zip(rows.values(), table_rows, strict=True):
            out[SEEDS_COLUMN] = max(len(found) for found in row["_by_task"].values())
    frame = pd.DataFrame(table_rows, columns=columns)
    frame = frame.sort_values("upstream", kind="stable")
    frame = frame.sort_values(SCORE_COLUMN, ascending=False, na_position="last", kind="stable").reset_index(drop=True)
    higher = {**dict.fromkeys(costs, False), SCORE_COLUMN: True}
    higher.update({task_columns[t]: directions[t] for t in tasks})
    higher.update(dict.fromkeys(points_columns, True))
    return CorpusTable(
        corpus=corpus, fingerprint=fingerprint, preset=preset, frame=frame, higher_is_better=higher,
        task_columns=task_columns, notes=notes, benchmark=benchmark.name if benchmark else None,
        convexity=find_convexity(rows.values()), points=points, budgets=build_budgets(points), num_records=len(records),
        task_cuts=build_task_cuts([r for r in cut_records if r.task.name in tasks], reference_rows),
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
    reference_rows: Mapping[str, dict[str, Any] | None], notes: list[str], anchors: list[str] | None = None,
) -> dict[int, dict[str, tuple[float, float]]]:
    """Per row (by ``id``), the 95 % interval of each task figure and of the score; appends the
    method and each compressed row's paired test against the task's reference row to ``notes``, and
    keeps each row's score on every resample as ``row["_score_samples"]`` (for the budget view).
    Empty when no record keeps per-utterance counts (older records): the table is then as before.

    A task anchors the score only where its reference beats FBANK significantly (the paired
    interval of reference - FBANK, in the metric's better direction, excludes 0): elsewhere the
    ratio ``(s - FBANK) / (reference - FBANK)`` divides by a difference that may be noise and can
    take any value. Such a task is named in ``notes`` and left out of the score, which is then over
    the anchored tasks (``anchors`` receives them); its column and intervals stay."""
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
    anchored = _anchored_tasks(tasks, base, best, reference_rows, fbank_row, notes)
    if anchors is not None:
        anchors[:] = anchored
    for row in rows:
        score = ci.score_samples(samples.get(id(row), {}), base, best, anchored, SCORE_SCALE)
        row["_score_samples"] = score  # the budget view compares rows on these same draws
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


def _anchored_tasks(tasks, base, best, reference_rows, fbank_row, notes: list[str]) -> list[str]:
    """The tasks on which the reference beats FBANK significantly (see :func:`row_intervals`)."""
    from leaderboard import intervals as ci

    anchored = []
    for task in tasks:
        if task not in base or task not in best:
            anchored.append(task)  # no samples to test: the score is missing or as before
            continue
        higher = reference_rows[task]["_by_task"][task][0].task.higher_is_better
        gain = (best[task] - base[task]) if higher else (base[task] - best[task])
        low, high = ci.interval(gain)
        if low > 0.0:
            anchored.append(task)
            continue
        reference, fbank = reference_rows[task][task], fbank_row[task]
        if high < 0.0:
            verdict = "so the reference is significantly worse than FBANK there and a ratio to that difference would invert"
        else:
            verdict = "not significantly, so a ratio to that difference is noise"
        notes.append(
            f"{task} does not anchor the score: its reference ({reference:.2f}) beats FBANK ({fbank:.2f}) by "
            f"{(reference - fbank) * (1 if higher else -1):+.2f} [{low:+.2f}, {high:+.2f}], {verdict}; the score is "
            "over the other tasks"
        )
    if len(anchored) < len(tasks):
        notes.append(f"SUPERB-style score over {', '.join(anchored) or 'no task'} (of {', '.join(tasks)})")
    return anchored


def _add_superb_points(
    table_rows: list[dict[str, Any]], tasks: Sequence[str], task_columns: Mapping[str, str], notes: list[str]
) -> list[str]:
    """Add SUPERB's own per-task points (and their intervals) to the rows; returns the new columns."""
    added = []
    for task in tasks:
        if task not in SUPERB_REFERENCES:
            notes.append(f"SUPERB points: SUPERB fixes no reference values for {task}")
            continue
        column, source = f"{task.upper()} SUPERB points {UP}", task_columns[task]
        added.append(column)
        for out in table_rows:
            value = out.get(source)
            out[column] = None if value is None or math.isnan(value) else superb_points(task, value)
            low, high = out.get(low_column(source)), out.get(high_column(source))
            if out[column] is not None and low is not None and high is not None:
                out[low_column(column)], out[high_column(column)] = points_interval(task, low, high)
    if added:
        notes.append(POINTS_NOTE)
    return added


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
    out["method"] = method_cell(row)
    out[PARAMS_COLUMN] = params / 1e6 if params is not None else math.nan
    out[MACS_COLUMN] = macs_per_second / 1e9 if macs_per_second is not None else math.nan
    out[RTF_COLUMN] = rtf if rtf is not None else math.nan
    out[SUPERB_MACS_COLUMN] = record.upstream.get("macs_superb_g")
    for task in tasks:
        out[task_columns[task]] = row.get(task, math.nan)
    out[SCORE_COLUMN] = score if score is not None else math.nan
    return out


def _point(row: Mapping[str, Any], score: float | None, interval: tuple[float, float] | None) -> Point:
    record: Record = row["_record"]
    return Point(label=row_label(row), kind=row["_kind"], method=row["method"] or None, params=record.cost("params"),
                 macs_per_second=record.macs_per_second(), score=score, interval=interval,
                 samples=row.get("_score_samples"), tag=short_tag(row))  # fmt: skip


def _reference_notes(tasks: Sequence[str], reference_rows: Mapping[str, Any], fbank_rows: Sequence[Any]) -> list[str]:
    """Which row the score takes as 1000 on each task (by label), and that FBANK is its zero point."""
    by_row: dict[str, list[str]] = {}
    for task in tasks:
        if reference_rows.get(task) is not None:
            by_row.setdefault(row_label(reference_rows[task]), []).append(task)
    notes = [f"score reference (= 1000) on {', '.join(found)}: {label}" for label, found in by_row.items()]
    if fbank_rows:
        notes.append(f"score zero point (= 0) on every task: {row_label(fbank_rows[0])}")
    return notes


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
