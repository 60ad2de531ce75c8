"""The convexity paper's fine-tuning study: per task, its own convexity cut against the full teacher.

Recipe, flat:

    scores   the teacher's convexity per hidden state for every label type the tasks need (read
             from the scores cache when there: ``CACHE/convexity``)
    cut      per task, the teacher truncated where its label's curve says (SID: speaker, PR: phone,
             ASR/SLU/KS: word; ``--cut-labels`` overrides), in ``OUT/cuts/TASK``; a curve that
             keeps every layer has no cut, and the table says so
    tune     per task and seed, the cut and the full teacher fine-tuned end to end on the same
             schedule, seed, batches and head initialisation (``harness.finetune``);
             one report per pair in ``PUBLISH/runs/TASK/seed-S/finetune-TASK.json`` (a rerun skips
             the pairs whose report exists, and a pair killed while training goes on from its last
             validation, saved in ``OUT/state/TASK/seed-S/``: so a killed study resumes)
    table    ``PUBLISH/table.md``, ``table.csv``, ``study.json`` and ``curves.png`` (validation
             curves), with the paper's claims beside the measured figures

The reports hold no checkpoints, so ``PUBLISH`` can be committed (``leaderboard/published/...``).
On the 12-layer teacher, 600 steps bring SID to its plateau while PR's validation PER still falls
(a one-seed pilot, 2026-12-04); give PR more (``--task-steps``). Example::

    .venv/bin/python -m studies.convexity_finetune --teacher upstreams/teachers/synth-hubert-12l \\
        --corpus data/synth-tiny --tasks sid,pr --seeds 0,1,2 --steps 600 --task-steps pr=1500 \\
        --publish leaderboard/published/convexity-finetune-12l
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

from core.files import atomic_path, write_json
from core.paths import portable_path
from harness.commands import check_directories
from harness.compression.convexity.method import cached_score_layers, write_task_cut
from harness.compression.convexity.options import AVERAGES, DEFAULT_AVERAGE, LABEL_TYPES, MAX_POINTS, RULES
from harness.compression.convexity.selection import select_layers
from harness.devices import resolve_device
from harness.evaluation import provenance
from harness.finetune import PRESETS, FinetuneConfig, check_task_data, finetune_pair
from studies.finetune_table import PAPER_CLAIMS, build_study, load_report, plot_curves, to_csv, to_markdown
from tasks.registry import get_task

logger = logging.getLogger("convexity_finetune")
TASKS = ("pr", "sid", "asr", "slu", "ks")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    demo = PRESETS["demo"]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="upstreams/teachers/synth-hubert-tiny", help="the full model (a spec load_upstream takes)")
    parser.add_argument("--corpus", type=Path, default=Path("data/synth-tiny"), help="prepared corpus directory")
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated (default: {','.join(TASKS)})")
    parser.add_argument("--cut-labels", default="", metavar="TASK=LABEL,...", help="label type of a task's cut, overriding its own")
    parser.add_argument("--seeds", default="0,1,2", help="fine-tuning seeds: head initialisation and batch order (default: 0,1,2)")
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per model (default: 300)")
    parser.add_argument("--task-steps", default="", metavar="TASK=N,...", help="steps of a task, overriding --steps (e.g. pr=1500)")
    parser.add_argument("--eval-every", type=int, default=50, help="steps between validations (default: 50)")
    parser.add_argument("--batch-size", type=int, default=demo.batch_size, help=f"default: {demo.batch_size}")
    parser.add_argument("--encoder-lr", type=float, default=demo.encoder_lr, help=f"default: {demo.encoder_lr:g}")
    parser.add_argument("--head-lr", type=float, default=None, help="default: the task's demo head lr")
    parser.add_argument("--rule", default="peak", choices=RULES, help="where a curve cuts (default: peak)")
    parser.add_argument("--average", default=DEFAULT_AVERAGE, choices=AVERAGES,
                        help="convexity over classes (the harness) or over pairs (nnconvexity)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("runs/convexity-finetune"), help="the cuts (checkpoints)")
    parser.add_argument("--publish", type=Path, default=None, help="reports and table (default: OUT)")
    parser.add_argument("--cache", type=Path, default=Path("data/cache"), help="cache folder; scores in CACHE/convexity")
    parser.add_argument("--table-only", action="store_true",
                        help="fine-tune nothing: the table from the reports already under PUBLISH (a pair without one is left out)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    args = parser.parse_args(argv)
    args.publish = args.publish or args.out
    return args


def task_labels(tasks: list[str], overrides: str) -> dict[str, str]:
    """Task -> the label type of its cut; unknown tasks or labels raise ``ValueError`` naming the option."""
    labels = {task: get_task(task).convexity_labels for task in tasks}
    for item in filter(None, overrides.split(",")):
        task, _, label = item.partition("=")
        if task not in labels or label not in LABEL_TYPES:
            raise ValueError(f"--cut-labels {item!r}: give TASK=LABEL with a task of --tasks ({', '.join(tasks)}) "
                             f"and a label of {', '.join(LABEL_TYPES)}")  # fmt: skip
        labels[task] = label
    return labels


def task_steps(tasks: list[str], default: int, overrides: str) -> dict[str, int]:
    """Task -> its optimizer steps; an unknown task or a count below 1 raises ``ValueError`` naming the option."""
    steps = dict.fromkeys(tasks, default)
    for item in filter(None, overrides.split(",")):
        task, _, count = item.partition("=")
        if task not in steps or not count.isdigit() or int(count) < 1:
            raise ValueError(f"--task-steps {item!r}: give TASK=N with a task of --tasks ({', '.join(tasks)}) and N >= 1")
        steps[task] = int(count)
    return steps


def make_cuts(args: argparse.Namespace, labels: dict[str, str], device: torch.device) -> dict[str, dict]:
    """Per task: its label, the depth its curve keeps, and the cut's checkpoint (None: no cut)."""
    from upstreams import load_upstream

    model = load_upstream(args.teacher)
    # every label type, whichever the tasks need: one cache entry, the one `harness compress --method
    # convexity` and `harness run` write, serves a study of any subset of the tasks
    scores = cached_score_layers(args.teacher, model, args.corpus, LABEL_TYPES, MAX_POINTS["demo"], 0, device, probes=False,
                                 average=args.average, cache=args.cache / "convexity")  # fmt: skip
    cuts = {}
    for task, label in labels.items():
        selection = select_layers({label: scores.curves[label]}, args.rule)
        folder = write_task_cut(args.teacher, args.out / "cuts" / task, scores.curves[label], label, args.rule, task)
        cuts[task] = {"label": label, "kept_layers": selection.num_layers, "teacher_layers": model.config.num_layers,
                      "reason": selection.reason, "curve": scores.curves[label],
                      "checkpoint": portable_path(folder) if folder else None}  # fmt: skip
        logger.info("%s: %s curve keeps %d of %d layers%s", task, label, selection.num_layers, model.config.num_layers,
                    "" if folder else " (no cut: the teacher itself)")  # fmt: skip
    return cuts


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError:
        raise ValueError(f"--seeds {args.seeds!r}: give comma-separated integers, e.g. 0,1,2") from None
    if not seeds or not tasks:
        raise ValueError("--seeds and --tasks each need at least one value")
    labels = task_labels(tasks, args.cut_labels)
    check_directories(out=args.out, publish=args.publish, cache=args.cache)  # before any work, as the manifests
    for task in tasks:
        check_task_data(task, args.corpus, "demo")
    schedules = {task: FinetuneConfig(steps=steps, batch_size=args.batch_size, encoder_lr=args.encoder_lr,
                                      eval_every=min(args.eval_every, steps), head_lr=args.head_lr)
                 for task, steps in task_steps(tasks, args.steps, args.task_steps).items()}  # fmt: skip
    torch.set_num_threads(args.threads)
    device = torch.device(resolve_device(None if args.device == "auto" else args.device))
    started = time.perf_counter()

    cuts = make_cuts(args, labels, device)
    reports = []
    for task, cut in cuts.items():
        if cut["checkpoint"] is None:
            continue
        for seed in seeds:
            folder = args.publish / "runs" / task / f"seed-{seed}"
            if args.table_only and not (folder / f"finetune-{task}.json").is_file():
                logger.info("%s seed %d: no report yet; left out of the table (--table-only)", task, seed)
                continue
            path = finetune_pair(args.out / "cuts" / task, args.teacher, task, corpus=args.corpus,
                                 out=folder, device=str(device), seed=seed,
                                 schedule=schedules[task], save_finetuned=False,
                                 state_dir=args.out / "state" / task / f"seed-{seed}")  # fmt: skip
            reports.append(load_report(path))

    rows = build_study(cuts, reports)
    write_json(args.publish / "study.json", {
        "command": " ".join(["python", "-m", "studies.convexity_finetune", *(argv if argv is not None else sys.argv[1:])]),
        "teacher": portable_path(args.teacher), "corpus": portable_path(args.corpus), "seeds": seeds,
        "schedules": {report.task: report.schedule for report in reports},
        # where each report was trained (a --table-only run, or a study resumed elsewhere, trains on another machine)
        "report_devices": {f"{r.task}/seed-{r.seed}": r.device for r in reports},
        "device": provenance.device_description(str(device)),
        "threads": args.threads, "cuts": cuts, "paper_claims": PAPER_CLAIMS, "seconds_this_run": round(time.perf_counter() - started, 1),
        "rows": [{"task": r.task, "label": r.label, "kept_layers": r.kept_layers, "teacher_layers": r.teacher_layers,
                  "metric": r.metric, "value": r.value, "interval": r.spread, "difference": r.difference,
                  "difference_interval": r.difference_interval, "accuracy_verdict": r.accuracy_verdict if r.seeds else None,
                  "params": r.params, "train_s": r.train_s, "train_ratio": r.train_ratio,
                  "inference_s_per_audio_s": r.inference_s_per_audio_s, "inference_ratio": r.inference_ratio,
                  "best_steps": r.best_steps} for r in rows],
    })  # fmt: skip
    table = to_markdown(rows)
    with atomic_path(args.publish / "table.md") as tmp:
        tmp.write_text(table, encoding="utf-8")
    with atomic_path(args.publish / "table.csv") as tmp:
        tmp.write_text(to_csv(rows), encoding="utf-8")
    plot_curves(reports, args.publish / "curves.png")
    logger.info("convexity cuts fine-tuned against the full teacher:\n%s", table)


if __name__ == "__main__":
    main()
