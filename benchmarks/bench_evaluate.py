"""Benchmark: ``harness evaluate`` (cached frozen features) against s3prl's own SUPERB problem classes.

Both sides evaluate one upstream on the same tasks, corpus manifests, heads (sizes from our preset),
optimiser, learning rate, batch size, number of steps and validation interval:

- ours: :func:`harness.evaluation.engine.evaluate` with a fresh feature cache (extraction included), then
  once more with the cache warm (what every further learning rate or task on the same audio costs);
- s3prl: ``SuperbASR``, ``SuperbPR``, ``SuperbSID``, ``SuperbIC`` from espnet-s3prl, fed CSVs made
  from our manifests; they run the frozen upstream inside every training and validation step.

Prints both wall times, their ratio and both sets of test metrics (in percent). Needs the ``bench``
extra (librosa, tensorboard, sed_eval), which ``s3prl.problem`` imports. Example::

    .venv/bin/python benchmarks/bench_evaluate.py --upstream pruned_hubert --ckpt runs/teacher-tiny/teacher \\
        --corpus data/synth-tiny --steps 200

A sweep of learning rates multiplies s3prl's time by the number of rates and ours only by the
training part, so the single-rate ratio printed here is the smallest of the two.

Measured (2026-11-22, 2-core x86_64 CPU shared with a pretraining job, one torch thread per side;
embedded teacher, SynthSpeech tiny, demo heads, 200 steps per task, all four tasks): ours 161.2 s
with extraction (119.8 s warm), s3prl 2016.0 s: 12.5x cold, 16.8x warm. Test metrics at 200
steps, ours vs s3prl: WER 92.1 vs 108.2, PER 79.9 vs 83.6, SID 22.9 vs 25.0 %, SLU 6.3 vs 4.2 %
(neither converged at 200 steps; the gaps are within run-to-run noise of such short training).
Part of the ASR gap is the head: ours runs the BiLSTM on padded batches, s3prl on packed sequences,
which are several times slower on a CPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch
import yaml

import upstreams  # noqa: F401 - registers pruned_hubert, ... in s3prl.hub
from harness.evaluation.config import EvaluateConfig
from harness.evaluation.engine import evaluate
from tasks.corpora.manifest import SPLITS, read_manifest
from tasks.registry import get_task

logger = logging.getLogger("bench_evaluate")

S3PRL_CLASSES = {"asr": "SuperbASR", "pr": "SuperbPR", "sid": "SuperbSID", "slu": "SuperbIC"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", default="fbank", help="s3prl hub entry (default: fbank)")
    parser.add_argument("--ckpt", default=None, help="checkpoint for the entry")
    parser.add_argument("--corpus", type=Path, default=Path("data/synth-tiny"), help="prepared corpus directory")
    parser.add_argument("--tasks", default="asr,pr,sid,slu")
    parser.add_argument("--preset", default="demo", help="our preset: head sizes, lr, batch size, eval interval")
    parser.add_argument("--steps", type=int, default=200, help="training steps per task, both sides")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=0, help="s3prl DataLoader workers (default: 0)")
    parser.add_argument("--out", type=Path, default=None, help="keep work files and a JSON summary here")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads for both sides")
    parser.add_argument("--skip-s3prl", action="store_true", help="time only our engine")
    return parser.parse_args()


# ------------------------------------------------------------------------------------------- ours


def run_ours(args: argparse.Namespace, work: Path) -> dict:
    config = EvaluateConfig(
        upstream=args.upstream, ckpt=args.ckpt, tasks=args.tasks.split(","), corpus=args.corpus,
        preset=args.preset, device=args.device, cache_dir=work / "cache", records_dir=work / "records",
        max_steps=args.steps,
    )
    start = time.perf_counter()
    cold_paths = evaluate(config)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    evaluate(config)
    warm = time.perf_counter() - start
    metrics, timing = {}, {}
    for path in cold_paths:
        record = json.loads(path.read_text(encoding="utf-8"))
        metrics[record["task"]["name"]] = record["metrics"]["test"]
        timing[record["task"]["name"]] = record["timing"]
    return {"seconds": cold, "warm_seconds": warm, "metrics": metrics, "timing": timing}


# ------------------------------------------------------------------------------------------ s3prl


def write_s3prl_csvs(task_name: str, corpus: Path, out: Path) -> tuple[str, str, list[str]]:
    """Our manifests as the CSVs s3prl's recipes read (id, wav_path and the task's label column)."""
    task = get_task(task_name)
    paths = []
    for split in SPLITS:
        frame = read_manifest(corpus, task.manifest_task, split)
        column = {"asr": "transcription", "pr": "transcription", "sid": "label", "slu": "labels"}[task_name]
        labels = [task.parse_label(str(c)) for c in frame[column]]
        if task_name == "slu":
            labels = [" ; ".join(slots) for slots in labels]
        elif task_name == "sid":
            labels = [slots[0] for slots in labels]
        path = out / f"{split}.csv"
        pd.DataFrame({"id": frame["id"], "wav_path": frame["wav_path"], column: labels}).to_csv(path, index=False)
        paths.append(str(path))
    return paths[0], paths[1], [paths[2]]


def s3prl_overrides(task_name: str, args: argparse.Namespace, target: Path) -> dict:
    """s3prl config overrides that give its recipe our heads, data, optimiser and schedule."""
    preset = get_task(task_name).preset(args.preset)
    train, head = preset.train, preset.head
    steps = args.steps
    eval_every = min(train.eval_every, steps)
    upstream = {"name": args.upstream, **({"path_or_url": args.ckpt} if args.ckpt else {})}
    eval_sampler = {"batch_size": train.eval_batch_size}
    overrides = {
        "target_dir": str(target),
        "cache_dir": str(target / "cache"),
        "device": args.device,
        "num_workers": args.workers,
        "build_upstream": upstream,
        "build_optimizer": {"name": "Adam", "conf": {"lr": train.lr}},
        "train": {
            "total_steps": steps,
            "eval_step": eval_every,
            "log_step": eval_every,
            "save_step": steps,
            "gradient_clipping": train.grad_clip,
            "gradient_accumulate": train.grad_accum,
            "auto_resume": False,
            "seed": 0,
        },
    }
    if task_name == "asr":
        overrides["build_downstream"] = {
            "model_conf": {
                "module": "LSTM", "proj_size": head.proj_size, "hidden_size": [head.hidden_size] * head.num_layers,
                "dropout": [head.dropout] * head.num_layers, "layer_norm": [False] * head.num_layers,
                "proj": [False] * head.num_layers, "sample_rate": [1] * head.num_layers, "sample_style": "concat",
                "bidirectional": True,
            },
            "specaug_conf": specaug_overrides(head),
        }
        overrides["build_batch_sampler"] = {
            "train": {"batch_size": train.batch_size, "max_length": 10**9, "shuffle": True},
            "valid": eval_sampler, "test": eval_sampler,
        }
    elif task_name == "pr":
        overrides["build_downstream"] = {"hidden_size": head.projector_dim}
        overrides["build_batch_sampler"] = {
            "train": {"batch_size": train.batch_size, "max_length": 10**9}, "valid": eval_sampler, "test": eval_sampler,
        }
    else:
        overrides["build_downstream"] = {"hidden_size": head.projector_dim}
        overrides["build_batch_sampler"] = {
            "train": {"batch_size": train.batch_size, "shuffle": True}, "valid": eval_sampler, "test": eval_sampler,
        }
        if task_name == "sid":
            overrides["build_dataset"] = {"train": {"max_secs": train.max_train_seconds}}
    return overrides


def specaug_overrides(head) -> dict:
    """s3prl SpecAug with our masks and no time warping; s3prl refuses zero masks, so "off" is one
    frequency mask of width 0 (``randint(0, 1)``)."""
    if head.num_freq_masks == 0 and head.num_time_masks == 0:
        return {"apply_time_warp": False, "apply_freq_mask": True, "freq_mask_width_range": [0, 1],
                "num_freq_mask": 1, "apply_time_mask": False}
    return {
        "apply_time_warp": False,
        "apply_freq_mask": head.num_freq_masks > 0,
        "freq_mask_width_range": [0, head.freq_mask_width + 1],
        "num_freq_mask": max(head.num_freq_masks, 1),
        "apply_time_mask": head.num_time_masks > 0,
        "time_mask_width_range": [0, head.time_mask_width + 1],
        "num_time_mask": max(head.num_time_masks, 1),
    }


def run_s3prl(args: argparse.Namespace, work: Path) -> dict:
    import omegaconf
    import s3prl.problem as problems

    metrics, seconds = {}, {}
    for task_name in args.tasks.split(","):
        base = getattr(problems, S3PRL_CLASSES[task_name])
        target = work / "s3prl" / task_name
        target.mkdir(parents=True, exist_ok=True)
        csvs = write_s3prl_csvs(task_name, args.corpus, target)

        class FromManifests(base):
            manifest_csvs = csvs

            def prepare_data(self, prepare_data, target_dir, cache_dir, get_path_only=False):
                return self.manifest_csvs

        FromManifests.__name__ = f"Bench{base.__name__}"
        problem = FromManifests()
        config = omegaconf.OmegaConf.merge(problem.default_config(), s3prl_overrides(task_name, args, target))
        config = omegaconf.OmegaConf.to_container(config, resolve=True)
        config["prepare_data"].pop("dataset_root", None)
        start = time.perf_counter()
        problem.run(**config)
        seconds[task_name] = time.perf_counter() - start
        result = next((target / "evaluate").glob("*/test/result.yaml"))
        logs = yaml.safe_load(result.read_text())
        names = {"asr": ("wer", "cer"), "pr": ("per",), "sid": ("accuracy",), "slu": ("accuracy",)}[task_name]
        metrics[task_name] = {name: 100.0 * float(logs[name]) for name in names}
        logger.info("s3prl %s: %.1f s, %s", task_name, seconds[task_name], metrics[task_name])
    return {"seconds": sum(seconds.values()), "by_task_s": seconds, "metrics": metrics}


# ------------------------------------------------------------------------------------------- main


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if args.threads:
        torch.set_num_threads(args.threads)
    work = args.out or Path(tempfile.mkdtemp(prefix="bench_evaluate_"))
    if (work / "cache").exists():
        shutil.rmtree(work / "cache")  # the cold run must extract
    work.mkdir(parents=True, exist_ok=True)
    import s3prl.nn  # noqa: F401 - import costs are the same for both sides; keep them out of the timings

    ours = run_ours(args, work)
    theirs = None if args.skip_s3prl else run_s3prl(args, work)

    print(f"\nupstream {args.upstream} ({args.ckpt or 'no checkpoint'}), corpus {args.corpus}, preset {args.preset}, "
          f"{args.steps} steps per task, device {args.device}, {torch.get_num_threads()} threads")
    print(f"ours, cold cache (extraction included): {ours['seconds']:8.1f} s")
    print(f"ours, warm cache:                       {ours['warm_seconds']:8.1f} s")
    if theirs:
        print(f"s3prl problem classes:                  {theirs['seconds']:8.1f} s")
        print(f"speed-up: {theirs['seconds'] / ours['seconds']:.1f}x cold, {theirs['seconds'] / ours['warm_seconds']:.1f}x warm")
    print(f"\n{'task':5} {'metric':9} {'ours':>8} {'s3prl':>8}")
    for task_name, values in ours["metrics"].items():
        for metric, value in values.items():
            other = theirs["metrics"].get(task_name, {}).get(metric) if theirs else None
            print(f"{task_name:5} {metric:9} {value:8.2f} {'' if other is None else f'{other:8.2f}'}")
    summary = {"args": {k: str(v) for k, v in vars(args).items()}, "ours": ours, "s3prl": theirs,
               "threads": torch.get_num_threads(), "preset": {t: asdict(get_task(t).preset(args.preset).train)
                                                              for t in args.tasks.split(",")}}
    (work / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(f"\nsummary: {work / 'summary.json'}")


if __name__ == "__main__":
    main()
