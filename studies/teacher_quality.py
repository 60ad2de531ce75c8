"""Teacher quality: a teacher's frozen features against FBANK on every task, over several seeds.

Runs ``harness evaluate`` (demo heads by default) for FBANK and for the teacher with each seed
(head initialisation and batch order), keeps one record per (upstream, task, seed) under
``OUT/records/``, and prints a Markdown table of mean, standard deviation and the per-seed values,
with 95 % intervals (the leaderboard's bootstrap over test utterances and seeds, paired between
the two sides, so ``teacher − FBANK`` has its own interval), also written to
``OUT/teacher_quality.md`` and ``OUT/teacher_quality.json``. A rerun reuses the
records it finds, so a killed run resumes and two runs with different ``--upstreams`` can share
one ``OUT`` (then a last run without ``--upstreams`` only aggregates). Example::

    .venv/bin/python -m studies.teacher_quality --teacher upstreams/teachers/synth-hubert-tiny \\
        --corpus data/synth-tiny --seeds 0,1,2 --out runs/teacher-quality

The embedded teacher's model card quotes the table this prints.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import statistics
import sys
from pathlib import Path

import torch

from core.files import atomic_path, write_json
from core.records import Record, load_records
from harness.evaluation.config import EvaluateConfig
from harness.evaluation.engine import evaluate, same_schedule
from leaderboard.intervals import interval, paired_samples
from tasks.registry import get_task

logger = logging.getLogger("teacher_quality")
#: this invocation, kept in every record it writes (the leaderboard's "Produced by")
COMMAND = shlex.join(["python", "-m", "studies.teacher_quality", *sys.argv[1:]])
TASKS = ("asr", "pr", "sid", "slu", "ks")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="upstreams/teachers/synth-hubert-tiny", help="compact checkpoint directory")
    parser.add_argument("--corpus", type=Path, default=Path("data/synth-tiny"), help="prepared corpus directory")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated head seeds (default: 0,1,2)")
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--upstreams", default="fbank,teacher", help="which side(s) to run: fbank, teacher or both")
    parser.add_argument("--out", type=Path, default=Path("runs/teacher-quality"))
    parser.add_argument("--cache", type=Path, default=Path("data/cache"), help="feature cache (shared with harness)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    return parser.parse_args()


def _records(folder: Path, preset: str) -> dict[str, Record]:
    """The records of one (upstream, seed) folder by task name; the newest wins. A record made with
    another head or schedule than the task's current ``preset`` (an older preset) is not used."""
    found = {}
    for record in load_records(folder):
        task = record.task.name
        if same_schedule(record, get_task(task), preset):
            found[task] = record
    return found


def run_side(name: str, upstream: str, ckpt: str | None, args: argparse.Namespace, seeds: list[int], tasks: list[str]) -> None:
    for seed in seeds:
        folder = args.out / "records" / f"{name}-seed{seed}"
        missing = [t for t in tasks if t not in _records(folder, args.preset)]
        if not missing:
            continue
        logger.info("%s seed %d: evaluating %s", name, seed, ",".join(missing))
        evaluate(
            EvaluateConfig(
                upstream=upstream, ckpt=ckpt, tasks=missing, corpus=args.corpus, preset=args.preset, device="cpu",
                cache_dir=args.cache, records_dir=folder, seed=seed, command=COMMAND,
            )
        )  # fmt: skip


def summarise(args: argparse.Namespace, seeds: list[int], tasks: list[str]) -> dict | None:
    """Mean, std and per-seed values of both sides; None while a record is missing."""
    summary: dict = {"teacher": args.teacher, "corpus": str(args.corpus), "preset": args.preset, "seeds": seeds, "tasks": {}}
    found = {
        (name, seed): _records(args.out / "records" / f"{name}-seed{seed}", args.preset)
        for name in ("teacher", "fbank")
        for seed in seeds
    }
    for task in tasks:
        spec = get_task(task)
        row = {"metric": spec.main_metric, "higher_is_better": spec.higher_is_better}
        for name in ("teacher", "fbank"):
            values = []
            for seed in seeds:
                record = found[name, seed].get(task)
                if record is None:
                    logger.info("no %s record for %s seed %d yet (run with --upstreams %s); no table", name, task, seed, name)
                    return None
                values.append(round(record.main_score, 2))
            row[name] = {"values": values, "mean": round(statistics.mean(values), 2),
                         "std": round(statistics.stdev(values), 2) if len(values) > 1 else 0.0}  # fmt: skip
        better = row["teacher"]["mean"] > row["fbank"]["mean"]
        row["teacher_better"] = better if spec.higher_is_better else not better
        row |= _intervals({name: [found[name, seed][task] for seed in seeds] for name in ("teacher", "fbank")}, spec)
        summary["tasks"][task] = row
    return summary


def _intervals(records: dict[str, list[Record]], spec) -> dict:
    """95 % intervals of both sides and of ``teacher − FBANK`` (paired: the same utterance and seed
    draws); empty when a record has no per-utterance counts."""
    samples = paired_samples({name: [r.per_utterance for r in records[name]] for name in ("teacher", "fbank")})
    if samples is None:
        return {}
    low, high = interval(samples["teacher"] - samples["fbank"])
    significant = (low > 0) if spec.higher_is_better else (high < 0)
    return {"teacher_interval": [round(v, 2) for v in interval(samples["teacher"])],
            "fbank_interval": [round(v, 2) for v in interval(samples["fbank"])],
            "difference_interval": [round(low, 2), round(high, 2)],
            "teacher_significantly_better": bool(significant)}  # fmt: skip


def to_markdown(summary: dict) -> str:
    lines = [
        "| task (metric) | teacher, mean ± std [95 %] | FBANK, mean ± std [95 %] | teacher − FBANK [95 %] "
        "| teacher per seed | FBANK per seed |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for task, row in summary["tasks"].items():
        arrow = "↑" if row["higher_is_better"] else "↓"
        t, f = row["teacher"], row["fbank"]
        spread = {k: f" [{row[k][0]:.2f}, {row[k][1]:.2f}]" if k in row else "" for k in ("teacher_interval", "fbank_interval")}
        difference = t["mean"] - f["mean"]
        if "difference_interval" in row:
            low, high = row["difference_interval"]
            verdict = "significant" if row["teacher_significantly_better"] else "not significant"
            difference_text = f"{difference:+.2f} [{low:+.2f}, {high:+.2f}], {verdict}"
        else:
            difference_text = f"{difference:+.2f} (no per-utterance counts: no interval)"
        lines.append(
            f"| {task} ({row['metric']} {arrow}) | **{t['mean']:.2f} ± {t['std']:.2f}**{spread['teacher_interval']} "
            f"| {f['mean']:.2f} ± {f['std']:.2f}{spread['fbank_interval']} | {difference_text} "
            f"| {', '.join(f'{v:.2f}' for v in t['values'])} | {', '.join(f'{v:.2f}' for v in f['values'])} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    tasks = args.tasks.split(",")
    sides = {"fbank": ("fbank", None), "teacher": ("pruned_hubert", args.teacher)}
    for name in args.upstreams.split(","):
        if name not in sides:
            raise SystemExit(f"--upstreams: unknown side {name!r}; use fbank, teacher or both")
        run_side(name, *sides[name], args, seeds, tasks)
    summary = summarise(args, seeds, tasks)
    if summary is None:
        return
    write_json(args.out / "teacher_quality.json", summary)
    table = to_markdown(summary)
    with atomic_path(args.out / "teacher_quality.md") as tmp:
        tmp.write_text(table, encoding="utf-8")
    logger.info("teacher vs FBANK (%s preset, seeds %s):\n%s", args.preset, args.seeds, table)


if __name__ == "__main__":
    main()
