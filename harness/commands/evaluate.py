"""``harness evaluate``: SUPERB-style evaluation of one upstream on ASR, PR, SID and SLU."""

from __future__ import annotations

import argparse
import hashlib
import logging
import shlex
from pathlib import Path

from harness.commands import set_torch_threads

logger = logging.getLogger(__name__)

DEFAULT_DATA = Path("data")
DEFAULT_SYNTH_PRESET = "tiny"

EPILOG = """examples:
  harness evaluate --upstream fbank --tasks asr,pr,sid,slu --corpus synth
  harness evaluate --upstream pruned_hubert --ckpt runs/dphubert/compact --tasks asr,sid --lr-sweep
  harness evaluate --upstream hubert_local --ckpt hubert_base_ls960.pt --corpus librispeech:/data/LibriSpeech \\
      --tasks asr,pr --preset paper --device cuda

--corpus accepts:
  synth                SynthSpeech tiny under data/synth-tiny (generated on first use)
  synth:DIR            SynthSpeech in DIR (tiny preset; generated when DIR is empty)
  NAME:PATH            a real corpus (librispeech, voxceleb1, fluent_commands, speech_commands) at PATH,
                       prepared into data/NAME-<hash> on first use (or PATH itself if it is prepared)
  DIR                  any prepared corpus directory (corpus.json + manifests/)
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="train SUPERB downstream heads on cached frozen features and write one record per task",
        description="Evaluate an s3prl upstream SUPERB-style: every layer's hidden states are computed once and "
        "cached (fp16, memory-mapped), then s3prl's Featurizer and each task's head are trained on train, the best "
        "step on valid is kept, and test is reported. Writes one JSON record per (upstream, task).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--upstream", required=True, help="s3prl hub entry, e.g. fbank, hubert, pruned_hubert")
    parser.add_argument("--ckpt", default=None, help="checkpoint file or directory passed to the upstream entry")
    parser.add_argument("--tasks", default="asr,pr,sid,slu", help="comma-separated tasks (default: asr,pr,sid,slu)")
    parser.add_argument("--corpus", default="synth", help="corpus to evaluate on (default: synth; see below)")
    parser.add_argument("--preset", default="demo", choices=["demo", "paper"],
                        help="demo: small heads, minutes on a CPU; paper: SUPERB's heads and schedules")
    parser.add_argument("--lr-sweep", action="store_true", help="try the preset's learning-rate grid, keep the best on valid")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    parser.add_argument("--records", type=Path, default=Path("records"), help="directory for the JSON records (default: records)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_DATA / "cache",
                        help="feature cache directory, shared by runs (default: data/cache)")
    parser.add_argument("--seed", type=int, default=0, help="seed of head initialisation and batch order (default: 0)")
    parser.add_argument("--max-steps", type=int, default=None, help="cap on training steps per task (quick checks)")
    parser.add_argument("--extract-dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="autocast precision of feature extraction (default: float32)")
    parser.add_argument("--extract-batch-seconds", type=float, default=64.0,
                        help="padded audio seconds per extraction batch (default: 64)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice; 1 is fastest on a busy machine)")
    parser.set_defaults(func=run)


def resolve_corpus(spec: str, data_dir: Path = DEFAULT_DATA) -> Path:
    """Turn a ``--corpus`` value into a prepared corpus directory, generating or preparing it if needed."""
    if spec == "synth" or spec.startswith("synth:"):
        from tasks.corpora.synth import synthesize_corpus

        out = Path(spec.split(":", 1)[1]) if ":" in spec else data_dir / f"synth-{DEFAULT_SYNTH_PRESET}"
        if (out / "corpus.json").is_file():
            return out
        logger.info("generating SynthSpeech %s at %s (first use)", DEFAULT_SYNTH_PRESET, out)
        return Path(synthesize_corpus(out, preset=DEFAULT_SYNTH_PRESET, seed=0))
    if ":" in spec and not Path(spec).exists():
        from tasks.corpora import PREPARERS

        name, root = spec.split(":", 1)
        prepare = PREPARERS.get(name)  # unknown names raise with the known ones
        if (Path(root) / "corpus.json").is_file():
            return Path(root)
        out = data_dir / f"{name}-{hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:8]}"
        if not (out / "corpus.json").is_file():
            logger.info("preparing %s from %s into %s (first use)", name, root, out)
            prepare(root, out)
        return out
    path = Path(spec)
    if not (path / "corpus.json").is_file():
        raise FileNotFoundError(
            f"--corpus {spec}: not a prepared corpus (no corpus.json); use synth, synth:DIR, NAME:PATH "
            "(librispeech, voxceleb1, fluent_commands, speech_commands) or run `harness corpus` first"
        )
    return path


def command_line(args: argparse.Namespace) -> str:
    """The ``harness evaluate`` command that reproduces this run (kept in the records)."""
    words = ["harness", "evaluate", "--upstream", args.upstream, "--tasks", args.tasks, "--corpus", args.corpus,
             "--preset", args.preset, "--seed", str(args.seed)]
    if args.ckpt:
        words += ["--ckpt", args.ckpt]
    if args.lr_sweep:
        words.append("--lr-sweep")
    if args.max_steps is not None:
        words += ["--max-steps", str(args.max_steps)]
    if args.extract_dtype != "float32":
        words += ["--extract-dtype", args.extract_dtype]
    return shlex.join(words)


def run(args: argparse.Namespace) -> int:
    from harness.evaluate import EvaluateConfig, check_upstream_name, evaluate
    from tasks.registry import get_task

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not tasks:
        raise ValueError("--tasks is empty; give a comma-separated list such as asr,pr,sid,slu")
    for name in tasks:  # fail on a typo before generating corpora or loading models
        get_task(name)
    check_upstream_name(args.upstream)
    if args.max_steps is not None and args.max_steps < 1:
        raise ValueError(f"--max-steps must be >= 1, got {args.max_steps}")
    set_torch_threads(args.threads)
    config = EvaluateConfig(
        upstream=args.upstream,
        tasks=tasks,
        corpus=resolve_corpus(args.corpus),
        ckpt=args.ckpt,
        preset=args.preset,
        lr_sweep=args.lr_sweep,
        device=args.device,
        cache_dir=args.cache,
        records_dir=args.records,
        seed=args.seed,
        max_steps=args.max_steps,
        extract_dtype=args.extract_dtype,
        extract_batch_seconds=args.extract_batch_seconds,
        command=command_line(args),
    )
    paths = evaluate(config)
    for path in paths:
        print(path)
    return 0
