"""``harness evaluate``: SUPERB-style evaluation of one upstream on ASR, PR, SID and SLU."""

from __future__ import annotations

import argparse
import logging
import shlex
from pathlib import Path

from harness.commands import check_directories, default_of, defaulted, parse_head_seeds, set_torch_threads
from harness.devices import DEVICE_HELP
from harness.evaluation.config import UTTERANCE_FEATURES, EvaluateConfig
from tasks.benchmarks import DEFAULT_BENCHMARK, get_benchmark
from tasks.corpora.resolve import DEFAULT_CORPUS, resolve_corpus
from tasks.schedules import SCHEDULES, schedule_help

logger = logging.getLogger(__name__)

EPILOG = """examples:
  harness evaluate --upstream fbank --tasks asr,pr,sid,slu --corpus synth
  harness evaluate --upstream pruned_hubert --ckpt runs/dphubert/compact --tasks asr,sid --lr-sweep
  harness evaluate --upstream hubert_local --ckpt hubert_base_ls960.pt --corpus librispeech:/data/LibriSpeech \\
      --tasks asr,pr --preset paper --device cuda

--corpus accepts:
  synth                SynthSpeech tiny under data/synth-tiny (generated on first use)
  synth:DIR            SynthSpeech in DIR (tiny; generated when DIR is empty)
  NAME:PATH            a real corpus (librispeech, voxceleb1, fluent_commands, speech_commands) at PATH,
                       prepared into data/NAME-<hash> on first use (or PATH itself if it is prepared)
  DIR                  any prepared corpus directory (corpus.json + manifests/)
"""
D = EvaluateConfig  # every option's default is its field's


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
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="let one of s3prl's own entries open a --ckpt that does not load as safetensors or with "
                        "torch.load(weights_only=True); unpickling it can run any code, so only for files you trust "
                        "(pruned_* entries never unpickle)")
    tasks = ",".join(get_benchmark(DEFAULT_BENCHMARK).tasks)
    parser.add_argument("--tasks", default=tasks, help=f"comma-separated tasks (default: {tasks}, the tasks of {DEFAULT_BENCHMARK})")
    parser.add_argument("--corpus", default=DEFAULT_CORPUS, help=f"corpus to evaluate on (default: {DEFAULT_CORPUS}; see below)")
    parser.add_argument("--preset", default=default_of(D, "preset"), choices=SCHEDULES.names(), help=schedule_help())
    parser.add_argument("--lr-sweep", action="store_true", help="try the preset's learning-rate grid, keep the best on valid")
    parser.add_argument("--device", default=default_of(D, "device"), help=DEVICE_HELP)
    parser.add_argument("--records", type=Path, **defaulted(D, "records_dir", "directory for the JSON records"))
    parser.add_argument("--cache", type=Path, **defaulted(D, "cache_dir", "feature cache directory, shared by runs"))
    parser.add_argument("--seed", type=int, **defaulted(D, "seed", "seed of head initialisation and batch order"))
    parser.add_argument("--head-seeds", default=None,
                        help="head seeds, comma-separated: each task is trained once per seed, on features "
                        "extracted once (default: --seed alone)")
    parser.add_argument("--max-steps", type=int, default=None, help="cap on training steps per task (quick checks)")
    parser.add_argument("--extract-dtype", choices=["auto", "float32", "bfloat16", "float16"],
                        **defaulted(D, "extract_dtype", "autocast precision of feature extraction and online frames "
                                    "(auto: bfloat16 on a GPU that has it, float32 on the CPU)"))
    parser.add_argument("--extract-batch-seconds", type=float, **defaulted(D, "extract_batch_seconds", "padded audio seconds per extraction batch"))
    parser.add_argument("--cache-budget", type=float, default=None, metavar="GB",
                        help="feature cache a run may add, in GB (default: half the free space of --cache); a split's "
                        "frames that do not fit are extracted online, inside training, and never stored")
    parser.add_argument("--plan", action="store_true",
                        help="print each task's features (pooled / cached frames / online), the cache they add against "
                        "the budget and free space, and the extraction time estimate; train nothing")
    parser.add_argument("--utterance-features", choices=UTTERANCE_FEATURES,
                        **defaulted(D, "utterance_features", "what utterance-level heads (sid, slu) train on: auto = "
                                    "each layer's mean frame per utterance where the head makes that exact (the same "
                                    "logits at a fraction of the cache and time), frames = always the frames"))
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice; 1 is fastest on a busy machine)")
    parser.set_defaults(func=run)


def command_line(args: argparse.Namespace) -> str:
    """The ``harness evaluate`` command that reproduces this run (kept in the records)."""
    words = ["harness", "evaluate", "--upstream", args.upstream, "--tasks", args.tasks, "--corpus", args.corpus,
             "--preset", args.preset, "--seed", str(args.seed)]  # fmt: skip
    if args.ckpt:
        words += ["--ckpt", args.ckpt]
    if args.trust_checkpoint:
        words.append("--trust-checkpoint")
    if args.lr_sweep:
        words.append("--lr-sweep")
    if args.max_steps is not None:
        words += ["--max-steps", str(args.max_steps)]
    if args.extract_dtype != default_of(D, "extract_dtype"):
        words += ["--extract-dtype", args.extract_dtype]
    if args.utterance_features != default_of(D, "utterance_features"):
        words += ["--utterance-features", args.utterance_features]
    return shlex.join(words)


def run(args: argparse.Namespace) -> int:
    from harness.devices import resolve_device
    from harness.evaluation.engine import evaluate
    from harness.evaluation.plan import resolve_budget
    from tasks.registry import get_task
    from upstreams.s3prl_hub import check_checkpoint, check_upstream_name

    # every option is checked before any work (corpus generation, model loading, extraction)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not tasks:
        raise ValueError("--tasks is empty; give a comma-separated list such as asr,pr,sid,slu")
    for name in tasks:  # fail on a typo before generating corpora or loading models
        get_task(name).preset(args.preset)
    check_upstream_name(args.upstream)
    check_checkpoint(args.upstream, args.ckpt, args.trust_checkpoint)
    if args.max_steps is not None and args.max_steps < 1:
        raise ValueError(f"--max-steps must be >= 1, got {args.max_steps}")
    if not args.extract_batch_seconds > 0:
        raise ValueError(f"--extract-batch-seconds must be > 0, got {args.extract_batch_seconds:g}")
    resolve_device(args.device)
    check_directories(records=args.records, cache=args.cache)
    resolve_budget(args.cache, args.cache_budget)  # a budget larger than the free space fails here
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
        head_seeds=parse_head_seeds(args.head_seeds),
        max_steps=args.max_steps,
        extract_dtype=args.extract_dtype,
        extract_batch_seconds=args.extract_batch_seconds,
        utterance_features=args.utterance_features,
        cache_budget_gb=args.cache_budget,
        command=command_line(args),
        trust_checkpoint=args.trust_checkpoint,
    )
    if args.plan:
        from harness.evaluation.engine import plan

        print(plan(config))
        return 0
    paths = evaluate(config)
    for path in paths:
        print(path)
    return 0
