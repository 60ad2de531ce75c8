"""The ``harness`` command. Each sub-command lives in ``harness/commands/<name>.py`` and defines
``add_parser(subparsers)``, which registers its options and sets ``func`` to the function that runs it.
Heavy imports stay inside those functions, so ``harness --help`` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from core.files import FULL_DISK_ERRNOS, WriteError, write_error

COMMANDS = ["run", "corpus", "pretrain", "compress", "evaluate", "leaderboard"]  # harness/commands/<name>.py, in --help order


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Compress self-supervised speech models and benchmark them SUPERB-style.",
        epilog="Example: harness corpus synth --out data/synth-tiny --preset tiny",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"harness.commands.{name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        logging.getLogger("harness").error("interrupted; finished steps are kept and a rerun resumes")
        return 130
    except (ValueError, FileNotFoundError, KeyError, WriteError) as err:
        # Bad input, or an output that cannot be written: one clear line, no traceback (use -v to see it).
        return _one_line(err)
    except OSError as err:
        if err.errno not in FULL_DISK_ERRNOS:
            raise
        return _one_line(write_error(err.filename or "an output file", err))


def _one_line(err: BaseException) -> int:
    logging.getLogger("harness").debug("traceback", exc_info=True)
    logging.getLogger("harness").error("%s", err)
    return 2


if __name__ == "__main__":
    sys.exit(main())
