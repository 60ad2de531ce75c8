"""``harness compress``: make a compact upstream from a teacher with one compression method."""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)

EXAMPLES = """examples:
  harness compress --method convexity --labels all --rule peak --out runs/convexity
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
    convexity = parser.add_argument_group("convexity")
    convexity.add_argument("--labels", default="all", help="word, phone, speaker or all (default: all)")
    convexity.add_argument("--rule", default="peak", help="peak (default) or plateau: where the kept layers end")
    convexity.add_argument("--max-points", type=int, default=None,
                           help="labelled segments per label type (default: demo 2000, paper 5000)")
    dphubert = parser.add_argument_group("dphubert")
    dphubert.add_argument("--sparsity", type=float, default=0.75, help="target fraction of parameters removed (default 0.75)")
    dphubert.add_argument("--stage1-steps", type=int, default=None, help="override the preset's distill+prune steps")
    dphubert.add_argument("--stage2-steps", type=int, default=None, help="override the preset's final distillation steps")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from harness.commands.evaluate import resolve_corpus
    from harness.compression.methods import METHODS
    from harness.defaults import DEFAULT_TEACHER

    compress = METHODS.get(args.method)
    teacher = args.teacher or str(DEFAULT_TEACHER)
    options = {"labels": args.labels, "rule": args.rule, "max_points": args.max_points, "seed": args.seed,
               "sparsity": args.sparsity}  # fmt: skip
    if args.stage1_steps is not None:
        options["stage1_steps"] = args.stage1_steps
    if args.stage2_steps is not None:
        options["stage2_steps"] = args.stage2_steps
    out = compress(teacher, args.out, corpus=resolve_corpus(args.corpus), preset=args.preset, device=args.device, **options)
    logger.info("compact checkpoint written to %s", out)
    return 0
