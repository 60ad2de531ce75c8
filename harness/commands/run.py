"""``harness run``: the main job. Compress the teacher with each method, register the compact models as an
s3prl upstream, evaluate them beside the teacher and FBANK, and regenerate and print the leaderboard."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXAMPLES = """examples:
  harness run --upstream pruned_hubert --tasks asr,sid
  harness run --upstream pruned_hubert --tasks asr,pr,sid,slu --methods dphubert --sparsity 0.5,0.75,0.9
  harness run --upstream pruned_hubert --teacher facebook/hubert-base-ls960 --corpus librispeech:/data/LibriSpeech \\
      --tasks asr,pr --preset paper --device cuda
  harness run --upstream pruned_wavlm --teacher torchaudio:WAVLM_BASE_PLUS --tasks sid

A rerun skips what is finished: compact checkpoints, cached features and records.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="the main job: compress with every method, evaluate beside the teacher and FBANK, print the leaderboard",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--upstream", default="pruned_hubert",
                        help="s3prl entry the compact models load as: pruned_hubert, pruned_wavlm or pruned_wav2vec2")
    parser.add_argument("--tasks", default="asr,sid", help="comma-separated tasks: asr, pr, sid, slu (default: asr,sid)")
    parser.add_argument("--methods", default="convexity,dphubert", help="compression methods (default: convexity,dphubert)")
    parser.add_argument("--teacher", default=None,
                        help="compact dir, transformers dir or hub name, torchaudio:BUNDLE, fairseq .pt "
                        "(default: the embedded SynthSpeech HuBERT teacher)")
    parser.add_argument("--corpus", default="synth", help="synth (default; generated on first use), synth:DIR, NAME:PATH or a prepared corpus")
    parser.add_argument("--preset", default="demo", choices=["demo", "paper"], help="demo (CPU, minutes) or paper settings")
    parser.add_argument("--sparsity", default="0.75", help="DPHuBERT target sparsities, comma-separated; one row per level")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    parser.add_argument("--out", type=Path, default=Path("runs/run"), help="compression outputs (default: runs/run)")
    parser.add_argument("--records", type=Path, default=Path("runs/records"), help="run records (default: runs/records)")
    parser.add_argument("--leaderboard", type=Path, default=Path("runs/leaderboard"),
                        help="where leaderboard.md/.csv/.html go (default: runs/leaderboard)")
    parser.add_argument("--cache", type=Path, default=Path("data/cache"), help="feature cache (default: data/cache)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every method and head (default: 0)")
    parser.add_argument("--max-steps", type=int, default=None, help="cap on downstream training steps (quick checks)")
    parser.add_argument("--jobs", default="auto",
                        help="parallel worker processes; compressions and evaluations overlap (default auto: "
                        "2 on a CPU with 2+ cores, 1 with a GPU)")
    parser.set_defaults(func=_run)  # fmt: skip


def _run(args: argparse.Namespace) -> int:
    from core.paths import EMBEDDED_TEACHER
    from harness.run import RunConfig, run

    try:
        sparsities = [float(s) for s in args.sparsity.split(",") if s]
    except ValueError as err:
        raise ValueError(f"--sparsity {args.sparsity!r}: give numbers between 0 and 1, e.g. 0.5,0.75") from err
    if not sparsities or not all(0 < s < 1 for s in sparsities):
        raise ValueError(f"--sparsity {args.sparsity!r}: every level must be between 0 and 1 (exclusive)")
    config = RunConfig(
        jobs=_jobs(args.jobs, args.device),
        upstream=args.upstream,
        tasks=[t for t in args.tasks.split(",") if t],
        methods=[m for m in args.methods.split(",") if m],
        teacher=args.teacher or str(EMBEDDED_TEACHER),
        corpus=args.corpus,
        preset=args.preset,
        sparsities=sparsities,
        device=args.device,
        out=args.out,
        records_dir=args.records,
        leaderboard_dir=args.leaderboard,
        cache_dir=args.cache,
        seed=args.seed,
        max_steps=args.max_steps,
        command="harness " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("harness") else None,
    )
    return run(config)


def _jobs(value: str, device: str) -> int:
    """``--jobs``: a number, or ``auto`` (one per CPU core up to two; one when the run uses a GPU)."""
    if value != "auto":
        try:
            jobs = int(value)
        except ValueError:
            jobs = 0
        if jobs < 1:
            raise ValueError(f"--jobs {value!r}: give a whole number >= 1 or auto")
        return jobs
    import os

    if device.startswith("cuda"):
        return 1
    if device == "auto":
        import torch

        if torch.cuda.is_available():
            return 1
    return max(1, min(2, os.cpu_count() or 1))
