"""``harness leaderboard``: turn the run records into the Markdown, CSV and HTML leaderboard."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

EPILOG = """examples:
  harness leaderboard
  harness leaderboard --records runs/records --out leaderboard/

Writes OUT/leaderboard.md, OUT/leaderboard.csv and OUT/leaderboard.html (self-contained, sortable
columns, plots of score vs parameters and of convexity per layer), then prints the Markdown.
One table per corpus and downstream preset; when an upstream was evaluated twice on a task, the
latest record wins.
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
    parser.add_argument("--records", type=Path, default=Path("records"),
                        help="directory of JSON run records (default: records)")
    parser.add_argument("--out", type=Path, default=Path("leaderboard"),
                        help="directory for leaderboard.md/.csv/.html (default: leaderboard)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from harness.records import load_records
    from leaderboard.aggregate import build_leaderboard
    from leaderboard.render import write_leaderboard

    if not args.records.is_dir():
        raise FileNotFoundError(f"--records {args.records}: no such directory (run `harness evaluate` first)")
    records = load_records(args.records)
    if not records:
        raise ValueError(f"--records {args.records}: no run records (*.json) there; run `harness evaluate` first")
    command = shlex.join(["harness", "leaderboard", "--records", str(args.records), "--out", str(args.out)])
    paths = write_leaderboard(build_leaderboard(records), args.out, command=command)
    logger.info("leaderboard from %d records written: %s", len(records), ", ".join(str(p) for p in paths.values()))
    sys.stdout.write(paths["markdown"].read_text(encoding="utf-8"))
    return 0
