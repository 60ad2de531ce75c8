"""``harness leaderboard``: turn the run records into the Markdown, CSV and HTML leaderboard."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from core.paths import LEADERBOARD_DIR, RECORDS_DIR, portable_path
from tasks.benchmarks import BENCHMARKS

logger = logging.getLogger(__name__)

EPILOG = """examples:
  harness leaderboard
  harness leaderboard --records leaderboard/published/cpu-demo/records --out runs/cpu-demo --benchmark synthspeech-demo

Writes OUT/leaderboard.md, OUT/leaderboard.csv and OUT/leaderboard.html (self-contained, sortable
columns, plots of score vs parameters and MACs and of convexity per layer), OUT/budgets.csv (the
compressed rows by parameter budget, and the best method at each where the difference is significant)
and OUT/pareto.png (score vs parameters and MACs, one line per method, the Pareto frontier), then
prints the Markdown.
One table per corpus and downstream preset, its columns the tasks of the declared benchmark of that
corpus and preset (tasks.benchmarks); when an upstream was evaluated twice on a task, the latest
record wins.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "leaderboard",
        help="aggregate the run records into the leaderboard (Markdown, CSV, HTML) and print it",
        description="Build one table per corpus from the JSON run records: one row per upstream (method, teacher, "
        "sparsity, checkpoint), its parameters, MACs and real-time factor, each task's main metric and the "
        "SUPERB-style score (FBANK = 0, best uncompressed reference = 1000; missing when a task is missing).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--records", type=Path, default=RECORDS_DIR,
                        help=f"directory of JSON run records (default: {RECORDS_DIR})")
    parser.add_argument("--out", type=Path, default=LEADERBOARD_DIR,
                        help=f"directory for leaderboard.md/.csv/.html (default: {LEADERBOARD_DIR})")
    parser.add_argument("--benchmark", default=None, choices=BENCHMARKS.names(),
                        help="aggregate against this declared benchmark only: its tasks are the columns, a missing one "
                        "is shown as missing (default: each corpus and preset against its declared benchmark, if any)")
    parser.add_argument("--tasks", default=None, metavar="TASK,...",
                        help="these tasks as the columns of every corpus and preset: the table `harness run --tasks` "
                        "writes (not with --benchmark)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.records import load_records
    from leaderboard.aggregate import build_leaderboard
    from leaderboard.render import write_leaderboard
    from tasks.registry import get_task

    if not args.records.is_dir():
        raise FileNotFoundError(f"--records {args.records}: no such directory (run `harness evaluate` first)")
    records = load_records(args.records)
    if not records:
        raise ValueError(f"--records {args.records}: no run records (*.json) there; run `harness evaluate` first")
    words = ["harness", "leaderboard", "--records", portable_path(args.records), "--out", portable_path(args.out)]
    benchmark, tasks = None, None
    if args.benchmark and args.tasks:
        raise ValueError("--benchmark and --tasks: give one (a declared benchmark names its tasks)")
    if args.benchmark:
        benchmark = BENCHMARKS.get(args.benchmark)
        words += ["--benchmark", args.benchmark]
    if args.tasks:
        tasks = [get_task(name).name for name in args.tasks.split(",") if name]  # an unknown name raises with the known ones
        if not tasks:
            raise ValueError(f"--tasks {args.tasks!r}: give comma-separated task names")
        words += ["--tasks", ",".join(tasks)]
    tables = build_leaderboard(records, benchmark, tasks)
    if not tables:
        raise ValueError(f"--benchmark {args.benchmark}: no records in {args.records} are of its corpus and preset")
    paths = write_leaderboard(tables, args.out, command=shlex.join(words))
    logger.info("leaderboard from %d records written: %s", len(records), ", ".join(str(p) for p in paths.values()))
    sys.stdout.write(paths["markdown"].read_text(encoding="utf-8"))
    return 0
