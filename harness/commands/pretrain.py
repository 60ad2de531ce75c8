"""``harness pretrain``: HuBERT-style pretraining of a small teacher on a prepared corpus."""

from __future__ import annotations

import argparse
import logging

from harness.commands import set_torch_threads
from harness.devices import DEFAULT_DEVICE, DEVICE_HELP
from harness.pretrain_config import DEFAULT_RECIPE, PRESETS

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pretrain",
        help="pretrain a small HuBERT teacher (masked prediction of k-means targets, two iterations)",
        description="HuBERT pretraining: iteration 1 on MFCC k-means targets, iteration 2 on k-means of an "
        "iteration-1 layer. Uses the GPU with bf16 when present; multi-GPU with torchrun. A killed run resumes.",
        epilog="Example: harness pretrain --corpus data/synth-small-seed1 --recipe tiny --out runs/teacher",
    )
    parser.add_argument("--corpus", required=True, help="a prepared corpus directory (e.g. from `harness corpus synth`)")
    parser.add_argument("--recipe", "--preset", dest="recipe", default=DEFAULT_RECIPE,
                        help=f"architecture and schedule: {', '.join(PRESETS)} (default: {DEFAULT_RECIPE}, the embedded "
                        "teacher's); --preset is the old spelling")
    parser.add_argument("--out", required=True, help="output directory; the teacher lands in OUT/teacher")
    parser.add_argument("--device", default=DEFAULT_DEVICE, help=DEVICE_HELP)
    parser.add_argument("--steps", type=int, nargs=2, metavar=("ITER1", "ITER2"), help="override steps per iteration")
    parser.add_argument("--batch-size", type=int, help="override the batch size")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice; 1 leaves the other cores free)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from harness.commands import check_directories
    from harness.devices import resolve_device
    from harness.pretrain import command_line, pretrain

    # every option is checked before any work
    if args.recipe not in PRESETS:
        raise ValueError(f"--recipe {args.recipe!r}: choose one of {', '.join(PRESETS)}")
    if args.steps and min(args.steps) < 1:
        raise ValueError(f"--steps {' '.join(map(str, args.steps))}: give two step counts >= 1")
    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    resolve_device(args.device)
    check_directories(out=args.out)
    set_torch_threads(args.threads)
    overrides = {}
    if args.steps:
        overrides["steps"] = list(args.steps)
    if args.batch_size:
        overrides["batch_size"] = args.batch_size
    teacher = pretrain(args.corpus, args.out, args.recipe, args.device, overrides, command=command_line())
    logger.info("teacher written to %s", teacher)
    return 0
