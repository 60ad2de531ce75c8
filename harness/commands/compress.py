"""``harness compress``: make a compact upstream from a teacher with one compression method."""

from __future__ import annotations

import argparse
import logging

from harness.compression import dphubert_options

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
        description="Compress a speech encoder into a compact checkpoint that loads as an s3prl upstream.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--method", required=True, help="convexity or dphubert")
    parser.add_argument("--teacher", default=None,
                        help="compact dir, transformers dir or hub name, torchaudio:BUNDLE, fairseq .pt or DPHuBERT .pth "
                        "(default: the embedded SynthSpeech HuBERT teacher)")  # fmt: skip
    parser.add_argument("--out", required=True, help="output directory (the compact checkpoint)")
    parser.add_argument("--corpus", default="synth", help="synth (default), synth:DIR, NAME:PATH or a prepared corpus dir")
    parser.add_argument("--preset", default="demo", help="demo (CPU, minutes) or paper (the paper's schedule)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    convexity = parser.add_argument_group("convexity", "options of --method convexity")
    convexity.add_argument("--labels", default=None, help="word, phone, speaker or all (default: all)")
    convexity.add_argument("--rule", default=None, help="peak (default) or plateau: where the kept layers end")
    convexity.add_argument("--max-points", type=int, default=None,
                           help="labelled segments per label type (default: demo 2000, paper 5000)")  # fmt: skip
    convexity.add_argument("--finetune", default=None, metavar="TASK",
                           help="then fine-tune the pruned model and, for comparison, the full teacher end to end with "
                           "TASK's head (asr, pr, sid or slu); writes OUT/finetune-TASK.json (test metric, training "
                           "and inference time of both) and OUT/finetuned-TASK/; skipped if that JSON exists")
    convexity.add_argument("--finetune-steps", type=int, default=None, metavar="N",
                           help="override the fine-tuning preset's steps (demo 40, paper 20000)")
    dphubert = parser.add_argument_group("dphubert", "options of --method dphubert (defaults: the preset's)")
    dphubert_options.add_arguments(dphubert)
    # each method receives the options of its own group (their destinations are its keyword names)
    parser.set_defaults(func=_run, method_options={"convexity": _dests(convexity), "dphubert": _dests(dphubert)})


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
        flags = ", ".join("--" + name.replace("_", "-") for name in foreign)
        raise ValueError(f"--method {args.method} does not take {flags}")
    return {"seed": args.seed, **{name: getattr(args, name) for name in sorted(given & own)}}


def _run(args: argparse.Namespace) -> int:
    from core.paths import EMBEDDED_TEACHER
    from harness.commands.evaluate import resolve_corpus
    from harness.compression.methods import METHODS

    compress = METHODS.get(args.method)
    options = method_options(args)
    teacher = args.teacher or str(EMBEDDED_TEACHER)
    logger.debug("%s options: %s", args.method, options)
    out = compress(teacher, args.out, corpus=resolve_corpus(args.corpus), preset=args.preset, device=args.device, **options)
    logger.info("compact checkpoint written to %s", out)
    return 0
