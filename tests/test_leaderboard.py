"""Leaderboard: score math, missing values, latest-record-wins, concurrent writers, rendering, CLI."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import multiprocessing
import re

import pandas as pd
import pytest

from core.records import Record, load_records, write_record
from harness.cli import main
from harness.evaluation.provenance import build_record
from leaderboard.aggregate import SCORE_COLUMN, build_leaderboard, superb_score
from leaderboard.render import FILE_NAMES, to_csv, to_html, to_markdown

ASR, SID = "ASR WER ↓", "SID accuracy ↑"
TASKS = {"asr": ("wer", False), "sid": ("accuracy", True)}


def make_record(upstream, task, value, *, method=None, sparsity=None, ckpt=None, params=1e6, date="2026-11-01T10:00:00+00:00"):
    """A record in the schema of core.records (only the fields the leaderboard reads)."""
    metric, higher = TASKS[task]
    info = {"name": upstream, "ckpt": ckpt, "ckpt_sha256": None, "params": params, "macs": 3e9, "input_seconds": 1.0}
    if method:
        info["compression"] = {"method": method, "teacher": "hubert_base", "sparsity": sparsity, "dir": ckpt}
        info["ckpt_sha256"] = f"{method}{sparsity}".encode().hex()
    return {
        "record_version": 1,
        "date": date,
        "task": {"name": task, "metrics": [metric], "main_metric": metric, "higher_is_better": higher},
        "main_score": {"name": metric, "value": value, "higher_is_better": higher, "split": "test"},
        "metrics": {"test": {metric: value}},
        "upstream": info,
        "corpus": {"name": "synth-tiny", "root": "/data/synth-tiny", "fingerprint": "f00d"},
        "config": {"preset": "demo"},
        "device": {"type": "cpu", "threads": 2},
    }


def results(rows):
    """``{upstream: {"asr": v, "sid": v}}`` plus keyword options -> records."""
    return [make_record(name, task, value, **options) for name, values, options in rows for task, value in values.items()]


REFERENCE_ROWS = [
    ("fbank", {"asr": 80.0, "sid": 10.0}, {"params": 0}),
    ("hubert", {"asr": 20.0, "sid": 90.0}, {"params": 94e6}),  # best reference on asr
    ("wavlm", {"asr": 30.0, "sid": 95.0}, {"params": 94e6}),  # best reference on sid
]


def row(table, upstream, method=None):
    """The row of ``upstream`` whose method cell starts with ``method`` (None: an uncompressed row)."""
    frame = table.frame
    match = frame[(frame["upstream"] == upstream) & frame["method"].str.startswith(method or "none (")]
    assert len(match) == 1, frame
    return match.iloc[0]


def test_score_is_zero_for_fbank_1000_for_best_reference_and_the_ratio_in_between():
    records = results([*REFERENCE_ROWS, ("pruned_hubert", {"asr": 50.0, "sid": 52.5}, {"method": "dphubert", "sparsity": 0.75})])
    (table,) = build_leaderboard(records)
    assert row(table, "fbank")[SCORE_COLUMN] == 0.0
    # asr (lower is better): (50-80)/(20-80) = 0.5; sid: (52.5-10)/(95-10) = 0.5
    assert row(table, "pruned_hubert", "dphubert")[SCORE_COLUMN] == pytest.approx(500.0)
    assert row(table, "hubert")[SCORE_COLUMN] == pytest.approx(500 * (1 + 80 / 85))
    assert row(table, "wavlm")[SCORE_COLUMN] == pytest.approx(500 * (50 / 60 + 1))
    assert list(table.frame["upstream"]) == ["hubert", "wavlm", "pruned_hubert", "fbank"]  # best score first
    assert {ASR, SID, SCORE_COLUMN} <= set(table.frame.columns)
    assert row(table, "hubert")["params (M) ↓"] == pytest.approx(94.0)
    assert row(table, "hubert")["MACs (G per s of audio) ↓"] == pytest.approx(3.0)


def test_cost_columns_read_the_record_fields_and_no_unwritten_aliases():
    flat = make_record("hubert", "asr", 20.0)
    flat["upstream"].update(macs=30e9, input_seconds=10.0, real_time_factor=0.05)
    direct = make_record("wavlm", "asr", 20.0)
    direct["upstream"].update(params=2e6, macs_per_second=4e9, real_time_factor=0.2)
    # a layout no writer produces (costs nested under "cost", "rtf", "hash") is not read: missing
    nested = make_record("w2v", "asr", 20.0)
    nested["upstream"] = {"name": "w2v", "hash": "ab", "cost": {"params": 2e6, "macs_per_second": 4e9, "rtf": 0.2}}
    (table,) = build_leaderboard([flat, direct, nested])
    columns = ["params (M) ↓", "MACs (G per s of audio) ↓", "RTF ↓"]
    assert list(row(table, "hubert")[columns]) == pytest.approx([1, 3, 0.05])
    assert list(row(table, "wavlm")[columns]) == pytest.approx([2, 4, 0.2])
    assert row(table, "w2v")[columns].isna().all() and row(table, "w2v")["checkpoint"] is None


def test_best_reference_on_every_task_scores_1000_and_compressed_rows_are_not_references():
    records = results([
        REFERENCE_ROWS[0], REFERENCE_ROWS[1],
        ("pruned_hubert", {"asr": 14.0, "sid": 98.0}, {"method": "convexity", "sparsity": 0.5}),  # beats hubert
    ])
    (table,) = build_leaderboard(records)
    assert row(table, "hubert")[SCORE_COLUMN] == pytest.approx(1000.0)
    # (14-80)/(20-80) = 1.1 and (98-10)/(90-10) = 1.1: above 1000, the reference stays hubert
    assert row(table, "pruned_hubert", "convexity")[SCORE_COLUMN] == pytest.approx(1100.0)
    assert superb_score({"a": 5.0}, {"a": 1.0}, {"a": 5.0}, ["a"]) == pytest.approx(1000.0)
    assert superb_score({"a": 5.0}, {"a": 1.0}, {"a": 5.0}, []) is None


def test_missing_task_shows_as_missing_and_the_score_is_missing():
    records = results([*REFERENCE_ROWS, ("pruned_hubert", {"asr": 50.0}, {"method": "dphubert", "sparsity": 0.75})])
    (table,) = build_leaderboard(records)
    pruned = row(table, "pruned_hubert", "dphubert")
    assert math.isnan(pruned[SID]) and math.isnan(pruned[SCORE_COLUMN])
    assert pruned[ASR] == 50.0  # not averaged over the tasks it has
    assert any("pruned_hubert" in note and "sid" in note for note in table.notes)
    markdown_row = next(line for line in to_markdown([table]).splitlines() if "pruned_hubert" in line)
    assert markdown_row.count("missing") == 3  # RTF (never measured here), SID and the score
    csv_row = pd.read_csv(io.StringIO(to_csv([table]))).query("upstream == 'pruned_hubert'").iloc[0]
    assert math.isnan(csv_row[SID]) and math.isnan(csv_row[SCORE_COLUMN])


def test_missing_fbank_or_reference_makes_scores_missing_with_a_note():
    (table,) = build_leaderboard(results(REFERENCE_ROWS[1:]))
    assert table.frame[SCORE_COLUMN].isna().all()
    assert any("FBANK" in note for note in table.notes)
    (table,) = build_leaderboard(results([REFERENCE_ROWS[0], ("hubert", {"asr": 20.0}, {})]))
    assert table.frame[SCORE_COLUMN].isna().all()
    assert any("no reference" in note and "sid" in note for note in table.notes)


def test_latest_record_wins_whatever_the_order():
    newer = make_record("hubert", "asr", 21.0, date="2026-11-02T09:00:00+00:00")
    older = make_record("hubert", "asr", 35.0, date="2026-11-01T09:00:00+00:00")
    for records in ([newer, older], [older, newer]):
        (table,) = build_leaderboard(records)
        assert len(table.frame) == 1 and table.frame.iloc[0][ASR] == 21.0


def test_corpora_and_presets_get_separate_tables():
    other = make_record("fbank", "asr", 70.0)
    other["corpus"] = {"name": "librispeech", "fingerprint": "beef"}
    tables = build_leaderboard([make_record("fbank", "asr", 80.0), other])
    assert [t.corpus for t in tables] == ["synth-tiny", "librispeech"]
    assert "## librispeech · preset demo" in to_markdown(tables)


def _write_many(directory, record, writer, count):
    for i in range(count):
        write_record(dataclasses.replace(record, upstream={**record.upstream, "name": f"up{writer}_{i}"}), directory)


def test_two_processes_writing_records_concurrently_lose_nothing(tmp_path):
    record = build_record(
        task={"name": "asr", "metrics": ["wer"], "main_metric": "wer", "higher_is_better": False},
        metrics={"test": {"wer": 40.0}},
        upstream={"name": "up", "ckpt": None, "params": 10, "macs": 20},
        corpus={"name": "synth-tiny", "root": str(tmp_path), "fingerprint": "f00d"},
        config={"preset": "demo"}, seeds={"train": 0}, timing={}, device={"type": "cpu"},
    )
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_write_many, args=(tmp_path, record, w, 25)) for w in range(2)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(timeout=60)
        assert process.exitcode == 0
    loaded = load_records(tmp_path)
    assert len(loaded) == 50 and not list(tmp_path.glob(".*.tmp"))
    (table,) = build_leaderboard(loaded)
    assert len(table.frame) == 50


def test_html_is_self_contained_sortable_and_has_both_plots(tmp_path):
    ckpt = tmp_path / "convexity_run"
    ckpt.mkdir()
    (ckpt / "convexity.json").write_text(json.dumps({"word": [10, 40, 55, 50], "speaker": [70, 50, 30, 20], "kept_layers": 2}))
    records = results([*REFERENCE_ROWS, ("pruned_hubert", {"asr": 50.0, "sid": 52.5},
                                         {"method": "convexity", "sparsity": 0.5, "ckpt": str(ckpt)})])
    page = to_html(build_leaderboard(records), command="harness leaderboard")
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.IGNORECASE)
    assert "<link" not in page and "<script src" not in page
    assert "function sortTable" in page and 'class="sortable"' in page and 'data-better="higher"' in page
    assert page.count('src="data:image/png;base64,') == 2
    assert "Convexity curves from pruned_hubert (convexity, sparsity 0.5)" in page and str(ckpt) in page
    assert "ASR WER ↓" in page and "SUPERB score ↑" in page

    page = to_html(build_leaderboard(results(REFERENCE_ROWS)))  # no compressed rows: the plot says so
    assert page.count('src="data:image/png;base64,') == 2 and "No convexity.json found" in page


def test_malformed_convexity_file_is_skipped(tmp_path, caplog):
    (tmp_path / "convexity.json").write_text('{"kept_layers": 3}')
    records = results([("pruned_hubert", {"asr": 50.0}, {"method": "convexity", "ckpt": str(tmp_path)})])
    (table,) = build_leaderboard(records)
    assert table.convexity == [] and "no curves" in caplog.text


def test_cli_writes_all_files_and_prints_the_markdown(tmp_path, capsys):
    records_dir, out = tmp_path / "records", tmp_path / "board"
    for record in results([*REFERENCE_ROWS, ("pruned_hubert", {"asr": 50.0}, {"method": "dphubert"})]):
        write_record(Record.from_dict(record), records_dir)
    assert main(["leaderboard", "--records", str(records_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in FILE_NAMES.values():
        assert (out / name).is_file()
    assert printed == (out / "leaderboard.md").read_text(encoding="utf-8")
    assert "| wavlm" in printed and "harness leaderboard --records" in printed
    frame = pd.read_csv(out / "leaderboard.csv")
    assert sorted(frame["upstream"]) == ["fbank", "hubert", "pruned_hubert", "wavlm"]
    assert "<table" in (out / "leaderboard.html").read_text(encoding="utf-8")


def test_cli_tasks_sets_the_columns_as_harness_run_does(tmp_path, caplog):
    records_dir, out = tmp_path / "records", tmp_path / "board"
    for record in results([*REFERENCE_ROWS, ("pruned_hubert", {"asr": 50.0}, {"method": "dphubert"})]):
        write_record(Record.from_dict(record), records_dir)
    assert main(["leaderboard", "--records", str(records_dir), "--out", str(out), "--tasks", "asr,ks"]) == 0
    markdown = (out / "leaderboard.md").read_text(encoding="utf-8")
    assert "harness leaderboard --records" in markdown and "--tasks asr,ks" in markdown
    assert "benchmark harness run: no result at all for ks" in markdown  # the column is there, missing
    assert "|   ASR WER ↓ |   KS accuracy ↑ |   SUPERB score ↑ |" in markdown
    assert main(["leaderboard", "--records", str(records_dir), "--out", str(out), "--tasks", "asr,kws"]) == 2
    assert "Known tasks" in caplog.text
    assert main(["leaderboard", "--records", str(records_dir), "--out", str(out), "--tasks", "asr",
                 "--benchmark", "synthspeech-demo"]) == 2  # fmt: skip
    assert "give one" in caplog.text


def test_cli_without_records_fails_clearly(tmp_path, caplog):
    assert main(["leaderboard", "--records", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "no such directory" in caplog.text
    (tmp_path / "empty").mkdir()
    assert main(["leaderboard", "--records", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no run records" in caplog.text


def test_local_teacher_shows_by_name_and_hub_teacher_as_given():
    from leaderboard.aggregate import upstream_identity

    record = make_record("pruned_hubert", "sid", 50.0, method="dphubert", sparsity=0.75, ckpt="/x/dphubert")
    record["upstream"]["compression"]["teacher"] = "/tmp/clone/upstreams/teachers/synth-hubert-tiny"
    assert upstream_identity(record)["teacher"] == "synth-hubert-tiny"
    record["upstream"]["compression"]["teacher"] = "facebook/hubert-base-ls960"
    assert upstream_identity(record)["teacher"] == "facebook/hubert-base-ls960"


# folder: its declared benchmark, or the tasks of the `harness run --tasks` that wrote it
PUBLISHED = {"synthspeech-demo": "synthspeech-demo", "synthspeech-demo-12l": ("asr", "pr", "sid", "slu", "ks")}


@pytest.mark.parametrize("folder", sorted(PUBLISHED))
def test_the_published_tables_regenerate_from_their_records(folder):
    from pathlib import Path

    from tasks.benchmarks import get_benchmark

    published = Path(__file__).resolve().parents[1] / "leaderboard" / "published" / folder
    if not (published / "leaderboard.md").is_file():
        pytest.skip(f"leaderboard/published/{folder} is not published at this commit")
    records = load_records(published / "records", strict=True)
    declared = PUBLISHED[folder]
    if isinstance(declared, tuple):
        tables = build_leaderboard(records, tasks=declared)
    else:
        tables = build_leaderboard(records, get_benchmark(declared))
    expected = (published / "leaderboard.md").read_text(encoding="utf-8")
    command = re.search(r"Generated by `(.+?)`", expected).group(1)
    assert to_markdown(tables, command) == expected
    assert to_csv(tables) == (published / "leaderboard.csv").read_text(encoding="utf-8")
