"""``harness compress``: make a compact upstream from a teacher with one compression method."""

from __future__ import annotations

import argparse
import logging

from harness.compression.methods import METHODS
from harness.devices import DEFAULT_DEVICE, DEVICE_HELP
from tasks.corpora.resolve import DEFAULT_CORPUS, SPEC_HELP
from tasks.schedules import DEFAULT_SCHEDULE, SCHEDULES

logger = logging.getLogger(__name__)

EXAMPLES = """examples:
  harness compress --method convexity --labels all --rule peak --out runs/convexity
  harness compress --method convexity --labels speaker --finetune sid --out runs/convexity-sid
  harness compress --method dphubert --sparsity 0.75 --corpus synth --preset demo --out runs/dphubert-0.75
  harness compress --method convexity --teacher facebook/hubert-base-ls960 --corpus speech_commands:/data/sc --labels word --out runs/hubert-cvx

The output directory is a compact checkpoint: load it with S3PRLUpstream("pruned_hubert", path_or_url=OUT)
after `import upstreams`, or evaluate it with `harness evaluate --upstream pruned_hubert --ckpt OUT`.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compress",
        help="compress a teacher (convexity layer pruning or DPHuBERT) into a compact upstream",
        description="Compress a speech encoder into a compact checkpoint that loads as an s3prl upstream. Methods: "
        + "; ".join(f"{name}: {METHODS.get(name).help}" for name in METHODS.names()) + ".",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--method", required=True, help=f"the compression method: {', '.join(METHODS.names())}")
    parser.add_argument("--teacher", default=None,
                        help="compact dir, transformers dir or hub name, torchaudio:BUNDLE, fairseq .pt or DPHuBERT .pth "
                        "(default: the embedded SynthSpeech HuBERT teacher)")  # fmt: skip
    parser.add_argument("--out", required=True, help="output directory (the compact checkpoint)")
    parser.add_argument("--corpus", default=DEFAULT_CORPUS, help=SPEC_HELP)
    parser.add_argument("--preset", default=DEFAULT_SCHEDULE, choices=SCHEDULES.names(),
                        help=f"the method's schedule: demo (CPU, minutes) or paper (the paper's) (default: {DEFAULT_SCHEDULE})")
    parser.add_argument("--device", default=DEFAULT_DEVICE, help=DEVICE_HELP)
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    groups = {}
    for name in METHODS.names():  # each method's own options, in a group of its own
        group = parser.add_argument_group(name, f"options of --method {name} (defaults: the preset's)")
        METHODS.get(name).add_arguments(group)
        groups[name] = _dests(group)
    # each method receives the options of its own group (their destinations are its keyword names)
    parser.set_defaults(func=_run, method_options=groups)


def _dests(group: argparse._ArgumentGroup) -> list[str]:
    return [action.dest for action in group._group_actions]


def method_options(args: argparse.Namespace) -> dict:
    """The keyword options for ``--method``'s compress function: ``--seed`` and the given options of its group.

    Options left at None are not passed (the method's preset decides). An option of another
    method's group raises ``ValueError`` naming it, rather than being ignored.
    """
    groups: dict[str, list[str]] = args.method_options
    given = {name for names in groups.values() for name in names if getattr(args, name) is not None}
    own = set(groups.get(args.method, ()))
    foreign = sorted(given - own)
    if foreign:
        owners = {name: method for method, names in groups.items() for name in names}
        flags = ", ".join(f"--{name.replace('_', '-')} (an option of --method {owners[name]})" for name in foreign)
        raise ValueError(f"--method {args.method} does not take {flags}")
    return {"seed": args.seed, **{name: getattr(args, name) for name in sorted(given & own)}}


def _run(args: argparse.Namespace) -> int:
    from core.paths import EMBEDDED_TEACHER
    from harness.commands import check_directories
    from harness.devices import resolve_device
    from tasks.corpora.resolve import resolve_corpus
    from upstreams.importers import check_source

    method = METHODS.get(args.method)
    options = method_options(args)
    teacher = args.teacher or str(EMBEDDED_TEACHER)
    # every option, the output and the teacher are checked before any work (corpus generation, scoring, training)
    resolve_device(args.device)
    check_directories(out=args.out)
    method.check(args.preset, options, check_source(teacher, "--teacher"))
    logger.debug("%s options: %s", args.method, options)
    out = method.compress(teacher, args.out, corpus=resolve_corpus(args.corpus), preset=args.preset, device=args.device, **options)
    logger.info("compact checkpoint written to %s", out)
    return 0
