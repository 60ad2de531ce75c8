"""Validation curves, test figures over head seeds and step time of candidate demo heads of a task.

    .venv/bin/python benchmarks/head_curves.py --task asr --upstream fbank --corpus data/synth-tiny
    .venv/bin/python benchmarks/head_curves.py --task asr --upstream pruned_hubert \
        --ckpt upstreams/teachers/synth-hubert-tiny --corpus data/synth-tiny --seeds 0,1,2 \
        --variant demo --variant "long:steps=2000" --out runs/heads/asr-teacher.json

Each ``--variant`` is ``NAME`` or ``NAME:FIELD=VALUE,...``, overriding fields of the demo preset's
head (``BiLSTMHeadConfig``: num_layers, hidden_size, proj_size, dropout, num_time_masks, ...) or
its schedule (``TrainConfig``: steps, lr, batch_size, warmup_fraction, eval_every). Every variant
trains from the same seeds on the same cached features; the script logs the task's main
validation metric at each evaluation, keeps the step best on valid as ``harness evaluate`` does,
and reports its test metrics per seed, the main one's mean and standard deviation over seeds, and
the mean seconds per training step (one torch thread unless ``--threads``). This is how the demo
schedules were chosen (see tasks/asr.py). ``--out`` gets the JSON (written whole, then renamed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
from pathlib import Path

import torch

from core.files import write_json
from harness.evaluation.config import EvaluateConfig
from harness.evaluation.engine import load_split, setup, split_plans, task_preset
from harness.evaluation.heads import DownstreamModel, predict, train_head
from tasks.corpora.manifest import SPLITS
from tasks.registry import get_task

logger = logging.getLogger("head_curves")


def parse_variant(spec: str, preset) -> tuple[str, object]:
    """``NAME[:FIELD=VALUE,...]`` -> (name, the demo preset with those fields replaced)."""
    name, _, overrides = spec.partition(":")
    head, train = {}, {}
    head_fields = {f.name: f.type for f in dataclasses.fields(preset.head)}
    train_fields = {f.name: f.type for f in dataclasses.fields(preset.train)}
    for item in filter(None, overrides.split(",")):
        field, _, value = item.partition("=")
        if field in head_fields:
            head[field] = _parse(value, getattr(preset.head, field), spec)
        elif field in train_fields:
            train[field] = _parse(value, getattr(preset.train, field), spec)
        else:
            raise SystemExit(f"--variant {spec!r}: {field!r} is neither a head field ({', '.join(head_fields)}) "
                             f"nor a schedule field ({', '.join(train_fields)})")  # fmt: skip
    return name, dataclasses.replace(preset, head=dataclasses.replace(preset.head, **head),
                                     train=dataclasses.replace(preset.train, **train))  # fmt: skip


def _parse(value: str, current, spec: str):
    try:
        return type(current)(value) if current is not None else float(value)
    except ValueError as err:
        raise SystemExit(f"--variant {spec!r}: {value!r} is not a {type(current).__name__}") from err


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="asr", help="a registered task: asr, pr, sid, slu, ks (default: asr)")
    parser.add_argument("--upstream", default="fbank")
    parser.add_argument("--ckpt", default=None)
    parser.add_argument("--corpus", default="data/synth-tiny")
    parser.add_argument("--variant", action="append", default=None, help="NAME[:FIELD=VALUE,...] (default: demo)")
    parser.add_argument("--seeds", default="0", help="comma-separated head seeds (default: 0)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="JSON of every curve and test figure")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("harness").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",") if s]

    task = get_task(args.task)
    session = setup(EvaluateConfig(upstream=args.upstream, ckpt=args.ckpt, tasks=[args.task], corpus=args.corpus))
    kinds = {plan.split: plan.kind for plan in split_plans(session, [task.name])}  # pooled where exact, as evaluate does
    data = {
        split: load_split(task, session.config, split, session.cache, session.spec, session.upstream, session.checksums,
                          "cpu", kinds[split], session.shape)[0]
        for split in SPLITS
    }  # fmt: skip
    task.fit_labels(data["train"].references)
    data["train"].targets = [task.encode(ref) for ref in data["train"].references]

    results = {}
    for spec in args.variant or ["demo"]:
        name, preset = parse_variant(spec, task_preset(task, "demo"))
        runs = []
        for seed in seeds:
            result = train_head(task, preset, data["train"], data["valid"], preset.train.lr, seed, "cpu")
            model = DownstreamModel(data["train"].features, task.build_head(data["train"].features.hidden_size, preset.head))
            model.load_state_dict(result.state)
            test = task.score(data["test"].references, predict(model, task, data["test"], preset.train.eval_batch_size, "cpu"))
            main = task.main_metric
            runs.append({"seed": seed, "seconds_per_step": round(result.seconds / preset.train.steps, 4),
                         "best_step": result.best_step, f"valid_{main}": round(result.valid_metrics[main], 2),
                         **{f"test_{k}": round(v, 2) for k, v in test.items()},
                         "curve": [(h["step"], round(h[f"valid_{main}"], 2)) for h in result.history]})  # fmt: skip
            logger.info("%s seed %d: %s", name, seed, json.dumps(runs[-1]))
        values = [r[f"test_{task.main_metric}"] for r in runs]
        results[name] = {"spec": spec, "runs": runs, "test_mean": round(statistics.fmean(values), 2),
                         "test_sd": round(statistics.stdev(values), 2) if len(values) > 1 else None}  # fmt: skip
        logger.info("%s: test %s %s, mean %.2f, sd %s", name, task.main_metric, values, results[name]["test_mean"],
                    results[name]["test_sd"])  # fmt: skip
    report = {"task": task.name, "upstream": args.upstream, "ckpt": args.ckpt, "corpus": args.corpus, "seeds": seeds,
              "results": results}  # fmt: skip
    if args.out:
        write_json(args.out, report)
    print(json.dumps(report, indent=1))  # noqa: T201 - the report is this script's output


if __name__ == "__main__":
    main()
