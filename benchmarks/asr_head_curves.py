"""Validation curves and step time of candidate ASR demo heads, on one upstream's cached features.

    .venv/bin/python benchmarks/asr_head_curves.py --upstream fbank --corpus data/synth-tiny
    .venv/bin/python benchmarks/asr_head_curves.py --upstream pruned_hubert \
        --ckpt upstreams/teachers/synth-hubert-tiny --corpus data/synth-tiny --variants 2x128,1x128

Each variant is ``LAYERSxHIDDEN`` (BiLSTM layers x units per direction, projection = HIDDEN) and
trains with the demo schedule (``--steps``, lr, batch) from the same seed; the script prints the
validation WER every ``--eval-every`` steps and the mean seconds per training step (one torch
thread unless ``--threads``), which is how the demo head was chosen (see tasks/asr.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging

import torch

from harness.evaluate import EvaluateConfig, _LazyUpstream, load_split, setup, task_preset, train_head
from tasks.corpora.manifest import SPLITS
from tasks.registry import get_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", default="fbank")
    parser.add_argument("--ckpt", default=None)
    parser.add_argument("--corpus", default="data/synth-tiny")
    parser.add_argument("--variants", default="2x128,1x128")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)

    task = get_task("asr")
    session = setup(EvaluateConfig(upstream=args.upstream, ckpt=args.ckpt, tasks=["asr"], corpus=args.corpus))
    upstream = _LazyUpstream(args.upstream, args.ckpt)
    data = {
        split: load_split(task, session.config, split, session.cache, session.spec, upstream, session.checksums, "cpu")[0]
        for split in SPLITS
    }
    task.fit_labels(data["train"].references)
    data["train"].targets = [task.encode(ref) for ref in data["train"].references]

    results = {}
    for variant in args.variants.split(","):
        layers, hidden = (int(x) for x in variant.split("x"))
        preset = task_preset(task, "demo")
        preset.head = dataclasses.replace(preset.head, num_layers=layers, hidden_size=hidden, proj_size=hidden)
        preset.train.steps, preset.train.eval_every = args.steps, args.eval_every
        result = train_head(task, preset, data["train"], data["valid"], preset.train.lr, args.seed, "cpu")
        curve = [(h["step"], round(h["valid_wer"], 2)) for h in result.history]
        results[variant] = {"seconds_per_step": round(result.seconds / args.steps, 4), "best_step": result.best_step,
                            "best_valid_wer": round(result.valid_metrics["wer"], 2), "curve": curve}  # fmt: skip
        logging.getLogger(__name__).warning("%s: %s", variant, json.dumps(results[variant]))
    print(json.dumps({"upstream": args.upstream, "ckpt": args.ckpt, "results": results}, indent=1))  # noqa: T201


if __name__ == "__main__":
    main()
