"""``harness run``: the main job. Compress the teacher with each method, register the compact models as an
s3prl upstream, evaluate them beside the teacher and FBANK, and regenerate and print the leaderboard."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from core.paths import portable_command
from harness.commands import default_of, defaulted, parse_head_seeds
from harness.compression.sparsity import check_sparsity
from harness.devices import DEVICE_HELP
from tasks.corpora.resolve import SPEC_HELP
from tasks.schedules import SCHEDULES, schedule_help

EXAMPLES = """examples:
  harness run --upstream pruned_hubert --tasks asr,sid
  harness run --upstream pruned_hubert --tasks asr,pr,sid,slu --methods dphubert --sparsity 0.5,0.75,0.9
  harness run --upstream pruned_hubert --tasks asr,pr,sid,slu --budgets matched --head-seeds 0,1,2
  harness run --upstream pruned_hubert --teacher facebook/hubert-base-ls960 --corpus librispeech:/data/LibriSpeech \\
      --tasks asr,pr --preset paper --device cuda
  harness run --upstream pruned_wavlm --teacher torchaudio:WAVLM_BASE_PLUS --tasks sid

A rerun skips what is finished: compact checkpoints, cached features and records.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from harness.compression.convexity.options import AVERAGES
    from harness.compression.registry import METHODS
    from harness.run import BUDGETS
    from harness.run import RunConfig as D  # every option's default is its field's (torch-free import)

    parser = subparsers.add_parser(
        "run",
        help="the main job: compress with every method, evaluate beside the teacher and FBANK, print the leaderboard",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    targets = ", ".join(f"{m.name} {m.default_target:g}" for m in map(METHODS.get, METHODS.names()) if m.target_option)
    parser.add_argument("--upstream", **defaulted(
        D, "upstream", "s3prl entry the compact models load as: pruned_hubert, pruned_wavlm or pruned_wav2vec2"))
    parser.add_argument("--tasks", **defaulted(D, "tasks", "comma-separated tasks: asr, pr, sid, slu, ks"))
    others = ", ".join(name for name in METHODS.names() if not METHODS.get(name).in_default_run)
    parser.add_argument("--methods", **defaulted(
        D, "methods", "compression methods, comma-separated; by default those that fit the main command's time "
        f"budget on a CPU (also registered: {others})"))
    parser.add_argument("--teacher", default=None,
                        help="compact dir, transformers dir or hub name, torchaudio:BUNDLE, fairseq .pt "
                        "(default: the embedded SynthSpeech HuBERT teacher)")
    parser.add_argument("--corpus", default=default_of(D, "corpus"), help=SPEC_HELP)
    parser.add_argument("--preset", default=default_of(D, "preset"), choices=SCHEDULES.names(), help=schedule_help())
    parser.add_argument("--sparsity", default=None,
                        help="target sparsities of the methods that take one, comma-separated; one row per level "
                        f"(default: each method's own: {targets})")
    sweeping = ", ".join(f"{m.name} --{m.sweep_option.replace('_', '-')} all" for m in map(METHODS.get, METHODS.names())
                         if m.sweep_option)  # fmt: skip
    parser.add_argument("--budgets", default=default_of(D, "budgets"), choices=BUDGETS,
                        help="default: each method at its own size(s); matched: the methods whose sizes are "
                        f"outcomes make every size they can ({sweeping}) and the methods that take a target "
                        "run at each of those sizes too (parameters within 1 %%) besides their own, for "
                        f"comparisons at equal budgets (default: {default_of(D, 'budgets')})")
    parser.add_argument("--device", default=default_of(D, "device"), help=DEVICE_HELP)
    parser.add_argument("--out", type=Path, **defaulted(D, "out", "compression outputs"))
    parser.add_argument("--records", type=Path, **defaulted(D, "records_dir", "run records"))
    parser.add_argument("--leaderboard", type=Path, **defaulted(D, "leaderboard_dir", "where leaderboard.md/.csv/.html go"))
    parser.add_argument("--cache", type=Path, **defaulted(D, "cache_dir", "feature cache"))
    parser.add_argument("--seed", type=int, **defaulted(D, "seed", "seed of every method and head"))
    parser.add_argument("--head-seeds", default=None,
                        help="head seeds, comma-separated: each (upstream, task) is evaluated once per seed and the "
                        "table averages them, its intervals covering the seeds (default: --seed alone)")
    parser.add_argument("--max-steps", type=int, default=None, help="cap on downstream training steps (quick checks)")
    parser.add_argument("--jobs", default="auto",
                        help="parallel worker processes; compressions and evaluations overlap (default auto: "
                        "3 on a CPU with 2+ cores, so that both cores stay busy while one long head trains, "
                        "1 with a GPU)")
    parser.add_argument("--cache-budget", type=float, default=None, metavar="GB",
                        help="feature cache each evaluation may add, in GB (default: half the free space of --cache); "
                        "frames that do not fit are extracted online")
    parser.add_argument("--task-cuts", action=argparse.BooleanOptionalAction, default=True,
                        help="with convexity, also cut the teacher once per task where the convexity of that task's "
                        "own label type says (SID: speaker, PR: phone, ASR/SLU/KS: word) and evaluate each task on "
                        "its own cut, beside the all-labels model (default: on)")
    parser.add_argument("--cut-labels", default=None, metavar="TASK=LABEL,...",
                        help="the label type of a task's cut, e.g. slu=phone,sid=word (default: each task's own)")
    parser.add_argument("--average", default=None, choices=AVERAGES,
                        help="how the convexity methods (and the per-task cuts) average graph convexity: over classes "
                        "(the harness's default) or over pairs (the convexity authors' nnconvexity); a non-default "
                        "average writes its own folders, OUT/convexity-pairs and OUT/convexity-pairs-cuts")
    parser.add_argument("--plan", action="store_true",
                        help="print the compressions, the evaluations still to run and the teacher's feature plan "
                        "(cache against budget and free space, extraction time); run nothing")
    parser.set_defaults(func=_run)  # fmt: skip


def _run(args: argparse.Namespace) -> int:
    from harness.run import RunConfig, plan_run, run

    sparsities = None
    if args.sparsity is not None:
        try:
            sparsities = [float(s) for s in args.sparsity.split(",") if s]
        except ValueError as err:
            raise ValueError(f"--sparsity {args.sparsity!r}: give numbers between 0 and 1, e.g. 0.5,0.75") from err
        if not sparsities:
            raise ValueError(f"--sparsity {args.sparsity!r}: give numbers between 0 and 1, e.g. 0.5,0.75")
        check_sparsity(sparsities)
    head_seeds = parse_head_seeds(args.head_seeds)
    cut_labels = None
    if args.cut_labels:
        try:
            cut_labels = dict(item.split("=", 1) for item in args.cut_labels.split(",") if item)
        except ValueError as err:
            raise ValueError(f"--cut-labels {args.cut_labels!r}: give TASK=LABEL pairs, e.g. sid=speaker,asr=word") from err
    config = RunConfig(
        task_cuts=args.task_cuts,
        cut_labels=cut_labels,
        average=args.average,
        head_seeds=head_seeds,
        jobs=_jobs(args.jobs, args.device),
        upstream=args.upstream,
        tasks=[t for t in args.tasks.split(",") if t],
        methods=[m for m in args.methods.split(",") if m],
        teacher=args.teacher or default_of(RunConfig, "teacher"),
        corpus=args.corpus,
        preset=args.preset,
        sparsities=sparsities,
        budgets=args.budgets,
        device=args.device,
        out=args.out,
        records_dir=args.records,
        leaderboard_dir=args.leaderboard,
        cache_dir=args.cache,
        seed=args.seed,
        max_steps=args.max_steps,
        cache_budget_gb=args.cache_budget,
        command=portable_command(shlex.join(["harness", *sys.argv[1:]])) if sys.argv[0].endswith("harness") else None,
    )
    if args.plan:
        print(plan_run(config))  # noqa: T201 - the plan is this command's output
        return 0
    return run(config)


def _jobs(value: str, device: str) -> int:
    """``--jobs``: a number, or ``auto``: on a CPU with two cores or more, three workers (one thread
    each on two cores). A run's jobs are single-stream and uneven (FBANK's ASR head alone trains for
    about 10 min on this benchmark); with as many workers as cores, one core idles while the last
    long job runs, and a third worker lets the two cores share the remaining jobs instead. One
    worker when the run uses a GPU."""
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
    cores = os.cpu_count() or 1
    return 3 if cores >= 2 else 1
