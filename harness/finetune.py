"""Fine-tune a pruned encoder and its full teacher end to end on one task, and compare them.

The last step of convexity pruning (Dorszewski et al. 2024): the truncated encoder is fine-tuned
together with a task head, and its test score, training time and inference time are set against
the full model fine-tuned with the same schedule. Recipe (``finetune_pair``), flat::

    setup     the task (its preset's head), the train/valid/test manifests, labels fitted on train
    per model (the two alternate step by step; same seed, same batches, same head initialisation)
      train   encoder + head on padded raw waveforms, the head on the encoder's last hidden state;
              Adam with the encoder at ``encoder_lr`` (lower) and the head at ``head_lr``, linear
              warm-up then decay; the CNN feature extractor frozen; validation every ``eval_every``
      select  the step best on valid (the task's main metric)
      test    the test metric, and inference seconds per second of test audio
    resume    after each validation both runs' state goes to OUT/finetune-TASK.state.pt; a killed
              run started again goes on from there as if never stopped (the file goes at the end)
    save      OUT/finetuned-TASK/ (the fine-tuned pruned encoder as a compact checkpoint, plus its
              head in head.safetensors), then OUT/finetune-TASK.json (written last: a rerun skips)

Timings: ``train_s`` sums the model work of the training steps (forward, backward, optimizer;
CUDA synchronised), without audio reading and validation, after one untimed warm-up step;
``train_s_per_step`` is the median step; ``train_wall_s`` adds the model's audio reading.
Inference times the forward passes over the test split (batched, after one warm-up batch). Both
models run in one process with the same threads, interleaved: a training step of each in turn,
each test batch through both, the one that goes first alternating; so their time ratio sees the
same load on the machine. Each keeps its own random state, so alternating does not change what
either learns.

Run::

    harness compress --method convexity --labels word --finetune sid --out runs/cvx
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from core.files import atomic_path, write_json
from core.paths import portable_path
from harness import training
from harness.batching import BucketedBatches
from harness.evaluation import provenance
from harness.finetune_model import EncoderWithHead, WaveSplit, load_batch, predict, read_split, sync
from tasks.audio import SAMPLE_RATE
from tasks.base import Task, TaskPreset
from tasks.corpora.manifest import SPLITS, CorpusInfo, ManifestError, manifest_path
from tasks.registry import get_task

logger = logging.getLogger(__name__)


@dataclass
class FinetuneConfig:
    """The end-to-end schedule, the same for the pruned and the full model.

    Attributes:
        steps: optimizer steps.
        batch_size: utterances per step (padded to the longest; batches bucketed by length).
        encoder_lr: peak learning rate of the encoder (lower than the head's).
        head_lr: peak learning rate of the head; None takes the task preset's ``lr``.
        warmup: fraction of the steps with linear warm-up; linear decay to 0 after.
        eval_every: steps between validations (and at the last step).
        freeze_extractor: keep the CNN feature extractor fixed (the usual wav2vec 2.0 / HuBERT practice).
        grad_clip: max gradient norm.
        eval_batch_size: utterances per batch at validation and test.
        max_train_seconds: random crop of training utterances; None takes the task preset's (SID: 8 s in paper).
    """

    steps: int
    batch_size: int
    encoder_lr: float
    eval_every: int
    head_lr: float | None = None
    warmup: float = 0.1
    freeze_extractor: bool = True
    grad_clip: float = 1.0
    eval_batch_size: int = 16
    max_train_seconds: float | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"FinetuneConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.encoder_lr <= 0 or (self.head_lr is not None and self.head_lr <= 0):
            raise ValueError(f"learning rates must be > 0, got encoder_lr={self.encoder_lr}, head_lr={self.head_lr}")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"FinetuneConfig.warmup is a fraction in [0, 1), got {self.warmup}")


#: ``demo``: about a minute per model on one idle CPU core with the embedded teacher and SynthSpeech tiny.
#: ``paper``: a fine-tuning run of the usual size (the paper fine-tunes; its exact schedule is not ours).
PRESETS = {
    "demo": FinetuneConfig(steps=40, batch_size=8, encoder_lr=1e-4, eval_every=20),
    "paper": FinetuneConfig(steps=20_000, batch_size=8, encoder_lr=2e-5, eval_every=1000, eval_batch_size=32),
}


def resolve_schedule(
    preset: str, task_preset: TaskPreset, steps: int | None = None, schedule: FinetuneConfig | None = None
) -> FinetuneConfig:
    """The preset's schedule (or ``schedule``) with the task's head lr and crop filled in; ``steps`` overrides the steps."""
    if preset not in PRESETS:
        raise ValueError(f"unknown fine-tuning preset {preset!r}; choose one of {', '.join(PRESETS)}")
    config = dataclasses.replace(schedule or PRESETS[preset])
    if config.head_lr is None:
        config.head_lr = task_preset.train.lr
    if config.max_train_seconds is None:
        config.max_train_seconds = task_preset.train.max_train_seconds
    if steps is not None:
        config = dataclasses.replace(config, steps=steps, eval_every=min(config.eval_every, steps))
    if config.encoder_lr >= config.head_lr:
        logger.warning("encoder lr %g is not below the head lr %g", config.encoder_lr, config.head_lr)
    return config


def check_task_data(task_name: str, corpus: str | os.PathLike, preset: str) -> Task:
    """The task (an unknown name raises with the known ones), after checking its preset and manifests."""
    if preset not in PRESETS:
        raise ValueError(f"unknown fine-tuning preset {preset!r}; choose one of {', '.join(PRESETS)}")
    task = get_task(task_name)
    task.preset(preset)
    manifest = task.manifest_for(corpus)
    missing = [s for s in SPLITS if not manifest_path(corpus, manifest, s).is_file()]
    if missing:
        have = sorted(p.parent.name for p in (Path(corpus) / "manifests").glob("*/train.csv"))
        raise ManifestError(
            f"{corpus}: fine-tuning on {task_name!r} needs manifests/{manifest}/{{{','.join(SPLITS)}}}.csv; "
            f"{', '.join(missing)} missing (the corpus has tasks: {', '.join(have) or 'none'})"
        )
    return task


# ------------------------------------------------------------------------------------ training
class FinetuneRun:
    """One model's fine-tuning, advanced a step at a time, so that two models can alternate steps.

    The run keeps its own torch random state (dropout) and batch order: alternating with another run
    gives the same weights as training alone, while both see the same load on the machine.
    """

    def __init__(
        self, label: str, encoder: nn.Module, task: Task, head_config: Any, config: FinetuneConfig,
        data: dict[str, WaveSplit], seed: int, runtime: training.Runtime,
    ) -> None:  # fmt: skip
        training.seed_everything(seed)
        self.label, self.task, self.config, self.data, self.runtime = label, task, config, data, runtime
        self.rng = np.random.default_rng(seed)
        self.head = task.build_head(encoder.config.embed_dim, head_config)
        self.model = EncoderWithHead(encoder, self.head, config.freeze_extractor).to(runtime.device)
        self.optimizer = torch.optim.Adam([
            {"params": [p for p in encoder.parameters() if p.requires_grad], "lr": config.encoder_lr},
            {"params": list(self.head.parameters()), "lr": config.head_lr},
        ])  # fmt: skip
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, training.lr_factor_fn(config.steps, config.warmup))
        self.max_samples = round(config.max_train_seconds * SAMPLE_RATE) if config.max_train_seconds else None
        self.batches = BucketedBatches(data["train"].samples, config.batch_size, self.rng)
        self.best_value, self.best_step, self.best_metrics, self.best_state = None, 0, {}, None
        self.history: list[dict[str, Any]] = []
        self.step_s: list[float] = []
        self.losses: list[float] = []
        self.validation_s = self.load_s = 0.0
        self.resumed_at: list[int] = []  # the steps a killed run went on from

        # one untimed forward and backward (gradients discarded), so that start-up costs of the process
        # (allocator, kernels) do not land in the first steps' times
        train = data["train"]
        waveforms, lengths = load_batch(train, list(range(min(config.batch_size, len(train.paths)))), self.max_samples)
        with runtime.autocast():
            output, frame_lengths = self.model(waveforms.to(runtime.device), lengths.to(runtime.device))
        task.loss(output, frame_lengths.cpu(), train.targets[: len(lengths)]).backward()
        self.optimizer.zero_grad(set_to_none=True)
        self._torch_state = _random_state(runtime.device)

    def train_step(self) -> float:
        """One optimizer step; returns its loss. Only the model work is timed (forward to optimizer)."""
        train, device = self.data["train"], self.runtime.device
        self.model.train()
        began = time.perf_counter()
        batch = next(self.batches)
        waveforms, lengths = load_batch(train, batch, self.max_samples, self.rng)
        waveforms, lengths = waveforms.to(device), lengths.to(device)
        self.load_s += time.perf_counter() - began
        _set_random_state(self._torch_state, device)
        sync(device)
        began = time.perf_counter()
        with self.runtime.autocast():
            output, frame_lengths = self.model(waveforms, lengths)
        loss = self.task.loss(output, frame_lengths.cpu(), [train.targets[i] for i in batch])
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        sync(device)
        self.step_s.append(time.perf_counter() - began)
        self._torch_state = _random_state(device)
        self.losses.append(float(loss.detach()))
        return self.losses[-1]

    def record_validation(self, step: int, predictions: list, seconds: float) -> None:
        """Score the validation predictions at ``step``; keep the weights when they are the best so far."""
        metrics = self.task.score(self.data["valid"].references, predictions)
        self.validation_s += seconds
        interval = self.losses[-(step - (self.history[-1]["step"] if self.history else 0)) :]
        self.history.append({"step": step, "train_loss": round(float(np.mean(interval)), 4),
                             **{f"valid_{k}": round(v, 3) for k, v in metrics.items()}})  # fmt: skip
        logger.info("%s on %s step %d: loss %.3f, valid %s", self.label, self.task.name, step, self.history[-1]["train_loss"],
                    ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()))  # fmt: skip
        if self.task.is_better(metrics[self.task.main_metric], self.best_value):
            self.best_value, self.best_step, self.best_metrics = metrics[self.task.main_metric], step, metrics
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

    def state_dict(self) -> dict[str, Any]:
        """Everything the run needs to go on from here: weights, optimizer, schedule, random states,
        batch position, the best step so far and the measurements (tensors and plain containers only)."""
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "torch_rng": self._torch_state[0], "cuda_rng": self._torch_state[1], "numpy_rng": self.rng.bit_generator.state,
            "batches": self.batches.state_dict(), "best_value": self.best_value, "best_step": self.best_step,
            "best_metrics": self.best_metrics, "best_state": self.best_state, "history": self.history,
            "step_s": self.step_s, "losses": self.losses, "validation_s": self.validation_s, "load_s": self.load_s,
        }  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self._torch_state = (state["torch_rng"], state["cuda_rng"])
        self.rng.bit_generator.state = state["numpy_rng"]
        self.batches.load_state_dict(state["batches"])
        self.best_value, self.best_step, self.best_metrics = state["best_value"], state["best_step"], state["best_metrics"]
        self.best_state, self.history = state["best_state"], state["history"]
        self.step_s, self.losses = state["step_s"], state["losses"]
        self.validation_s, self.load_s = state["validation_s"], state["load_s"]

    def report(self, predictions: list, inference_s: float, test_audio_s: float) -> dict[str, Any]:
        """The run's report, from the best step's test predictions and timings."""
        encoder, test = self.model.encoder, self.data["test"]
        train_s = sum(self.step_s)
        report = {
            "num_layers": encoder.config.num_layers,
            "params": encoder.num_params(),
            "head_params": sum(p.numel() for p in self.head.parameters()),
            "best_step": self.best_step,
            "valid": self.best_metrics,
            "test": self.task.score(test.references, predictions),
            # per test utterance, the counts whose summed ratio is the main metric (for bootstrap intervals)
            "per_utterance": {"ids": test.ids, **self.task.utterance_counts(test.references, predictions)},
            "training": {"steps": self.config.steps, "train_s": round(train_s, 3),
                         "train_s_per_step": round(float(np.median(self.step_s)), 4),
                         "train_wall_s": round(train_s + self.load_s, 3), "validation_s": round(self.validation_s, 3),
                         "resumed_at": self.resumed_at},
            "inference": {"test_audio_s": round(test_audio_s, 2), "inference_s": round(inference_s, 4),
                          "inference_s_per_audio_s": inference_s / test_audio_s},
            "history": self.history,
        }  # fmt: skip
        logger.info("%s on %s: test %s; %.3f s per step (median), %.4f s per second of audio", self.label, self.task.name,
                    report["test"], report["training"]["train_s_per_step"], inference_s / test_audio_s)  # fmt: skip
        return report


def finetune_models(
    runs: list[FinetuneRun], config: FinetuneConfig, state_path: Path | None = None, identity: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Train ``runs`` in alternation, a step of each in turn, validating together every ``eval_every``
    steps; then test each at its best step (the test batches alternate too). Returns their reports.

    With ``state_path``, the runs' state is saved there (atomically) after each validation, and a state
    found there at the start is resumed from: the runs go on as if never stopped (the same batches,
    dropout and weights). ``identity`` (schedule, seed, corpus, models) is stored with it; a state of
    another identity raises ``ValueError`` naming the file. The file is removed once the runs are tested.
    """
    identity = identity or {}
    start = _resume(runs, state_path, identity) if state_path is not None else 0
    bar = tqdm(range(start + 1, config.steps + 1), initial=start, total=config.steps,
               desc=f"fine-tune {'/'.join(r.label for r in runs)} on {runs[0].task.name}", unit="step")  # fmt: skip
    for step in bar:
        turn = runs if step % 2 else runs[::-1]  # who goes first alternates too
        bar.set_postfix({run.label: f"{run.train_step():.3f}" for run in turn})
        if step % config.eval_every == 0 or step == config.steps:
            predicted = predict([run.model for run in runs], runs[0].task, runs[0].data["valid"], config.eval_batch_size, runs[0].runtime)
            for run, (predictions, seconds) in zip(runs, predicted[0], strict=True):
                run.record_validation(step, predictions, seconds)
            if state_path is not None:
                training.save_state(state_path, {"identity": identity, "step": step, "resumed_at": runs[0].resumed_at,
                                                 "runs": {run.label: run.state_dict() for run in runs}})  # fmt: skip
    bar.close()
    for run in runs:
        run.model.load_state_dict(run.best_state)
    tested, test_audio_s = predict([run.model for run in runs], runs[0].task, runs[0].data["test"], config.eval_batch_size,
                                   runs[0].runtime, warmup=True)  # fmt: skip
    reports = [run.report(p, s, test_audio_s) for run, (p, s) in zip(runs, tested, strict=True)]
    if state_path is not None:
        state_path.unlink(missing_ok=True)
    return reports


def _resume(runs: list[FinetuneRun], state_path: Path, identity: dict[str, Any]) -> int:
    """Restore the runs from ``state_path`` if it is there; returns the step it was saved at (0: none)."""
    state = training.load_state(state_path, map_location="cpu")  # random states stay CPU tensors
    if state is None:
        return 0
    if state.get("identity") != identity or set(state.get("runs", {})) != {run.label for run in runs}:
        differ = [k for k in identity if state.get("identity", {}).get(k) != identity[k]] or ["models"]
        raise ValueError(f"{state_path} is the state of another fine-tuning run (its {', '.join(differ)} differ); "
                         "remove it to start over, or give another output folder")  # fmt: skip
    for run in runs:
        run.load_state_dict(state["runs"][run.label])
        run.resumed_at = [*state["resumed_at"], state["step"]]
    logger.info("%s: resuming fine-tuning on %s at step %d", state_path, runs[0].task.name, state["step"])
    return state["step"]


def _random_state(device: torch.device) -> tuple:
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def _set_random_state(state: tuple, device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


# -------------------------------------------------------------------------------------- recipe
def finetune_pair(
    pruned: str | os.PathLike,
    teacher: str,
    task_name: str,
    *,
    corpus: str | os.PathLike,
    out: str | os.PathLike | None = None,
    preset: str = "demo",
    device: str | None = None,
    seed: int = 0,
    steps: int | None = None,
    schedule: FinetuneConfig | None = None,
    save_finetuned: bool = True,
    state_dir: str | os.PathLike | None = None,
) -> Path:
    """Fine-tune the compact checkpoint ``pruned`` and the full ``teacher`` on ``task_name``.

    Writes ``OUT/finetune-TASK.json`` (``out`` defaults to ``pruned``) and, with ``save_finetuned``,
    ``OUT/finetuned-TASK/``; returns the JSON's path. If the JSON exists and was made with the same
    schedule, seed and corpus, nothing is done; made otherwise, it raises ``ValueError`` naming it
    (a report of another schedule is never passed off as this one's).
    ``schedule`` replaces the preset's schedule; ``steps`` overrides its steps. While it trains, the pair's
    state is saved after each validation in ``STATE_DIR/finetune-TASK.state.pt`` (``state_dir`` defaults
    to ``out``; about 16 bytes per parameter of the two models, weights, Adam's moments and the best
    step's weights: 0.3 GB for the 12-layer SynthSpeech teacher and its cut, 2.6 GB for HuBERT Base and a
    cut of it; removed at the end), so a killed run resumes from its last validation.
    """
    from upstreams import load_upstream
    from upstreams.checkpoint import COST_NAME, load_compact, read_compact_config, save_compact

    out = Path(out if out is not None else pruned)
    report_path = out / f"finetune-{task_name}.json"
    task = check_task_data(task_name, corpus, preset)
    task_preset = task.preset(preset)
    config = resolve_schedule(preset, task_preset, steps, schedule)
    fingerprint = CorpusInfo.read(corpus).fingerprint
    if report_path.is_file():
        _check_existing(report_path, config, seed, fingerprint)
        logger.info("%s exists; fine-tuning on %s skipped", report_path, task_name)
        return report_path
    state_path = Path(state_dir if state_dir is not None else out) / f"finetune-{task_name}.state.pt"
    for folder, what in ((out, "out"), (state_path.parent, "state_dir")):  # before any work: the first save is minutes in
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ValueError(f"{what} {folder}: cannot create the directory ({error}); give a writable directory") from None
    runtime = training.setup_runtime(device)
    started = time.perf_counter()

    data = {split: read_split(task, corpus, split) for split in SPLITS}
    task.fit_labels(data["train"].references)
    data["train"].targets = [task.encode(ref) for ref in data["train"].references]
    logger.info("fine-tuning on %s: %s", task_name, ", ".join(f"{s} {len(d.paths)}" for s, d in data.items()))

    runs = [FinetuneRun("pruned", load_compact(pruned), task, task_preset.head, config, data, seed, runtime),
            FinetuneRun("full", load_upstream(teacher), task, task_preset.head, config, data, seed, runtime)]  # fmt: skip
    identity = {"task": task_name, "schedule": dataclasses.asdict(config), "seed": seed, "preset": preset,
                "corpus": fingerprint, "pruned": portable_path(pruned), "full": portable_path(teacher)}
    pruned_report, full_report = finetune_models(runs, config, state_path, identity)
    pruned_model = runs[0].model
    models = {"pruned": {"source": portable_path(pruned), **pruned_report}, "full": {"source": portable_path(teacher), **full_report}}
    if models["pruned"]["num_layers"] >= models["full"]["num_layers"]:
        logger.warning("the pruned model keeps all %d layers; the comparison shows no pruning", models["full"]["num_layers"])

    finetuned = None
    if save_finetuned:
        finetuned = out / f"finetuned-{task_name}"
        _, metadata = read_compact_config(pruned)
        metadata = {**metadata, "finetune": {"task": task_name, "from": str(pruned), "preset": preset,
                                              "test": models["pruned"]["test"], "labels": task.label_state(),
                                              "head": dataclasses.asdict(task_preset.head)}}  # fmt: skip
        save_compact(pruned_model.encoder.to("cpu"), finetuned, metadata=metadata)
        if (Path(pruned) / COST_NAME).is_file():  # same architecture, same cost
            shutil.copyfile(Path(pruned) / COST_NAME, finetuned / COST_NAME)
        _save_head(pruned_model.head, finetuned / "head.safetensors")

    main = task.main_metric
    comparison = _compare(models, main)
    write_json(report_path, {
        "task": {"name": task_name, "metrics": list(task.metric_names), "main_metric": main,
                 "higher_is_better": task.higher_is_better},
        "corpus": {"root": portable_path(Path(corpus).resolve()), "fingerprint": fingerprint,
                   "utterances": {s: len(d.paths) for s, d in data.items()}},
        "preset": preset,
        "schedule": dataclasses.asdict(config),
        "head": dataclasses.asdict(task_preset.head),
        "labels": task.label_state(),
        "device": provenance.device_description(str(runtime.device)),
        "seeds": {"train": seed},
        "models": models,
        "comparison": comparison,
        "finetuned_checkpoint": portable_path(finetuned) if finetuned else None,
        "seconds": round(time.perf_counter() - started, 1),
    })  # fmt: skip
    c = comparison
    logger.info("fine-tuned on %s: test %s pruned %.2f vs full %.2f; training time x%.2f, inference time x%.2f of the full model",
                task_name, main, c[f"test_{main}"]["pruned"], c[f"test_{main}"]["full"],
                c["train_time_ratio"], c["inference_time_ratio"])  # fmt: skip
    return report_path


def _check_existing(path: Path, config: FinetuneConfig, seed: int, fingerprint: str) -> None:
    """Refuse a report made with another schedule, seed or corpus than the one asked for."""
    import json

    try:
        made = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not a readable report ({error}); remove it to fine-tune again") from None
    wanted = {"schedule": dataclasses.asdict(config), "seed": {"train": seed}, "corpus": fingerprint}
    found = {"schedule": made.get("schedule"), "seed": made.get("seeds"), "corpus": made.get("corpus", {}).get("fingerprint")}
    differ = [key for key in wanted if wanted[key] != found[key]]
    if differ:
        raise ValueError(f"{path} was made with another {' and '.join(differ)} ({found[differ[0]]} against {wanted[differ[0]]} "
                         "asked for); remove it, or give another output folder")  # fmt: skip


def _compare(models: dict[str, dict[str, Any]], main: str) -> dict[str, Any]:
    """Pruned against full: the main test metric, and parameter, training and inference time ratios."""
    pruned, full = models["pruned"], models["full"]
    return {
        f"test_{main}": {"pruned": pruned["test"][main], "full": full["test"][main]},
        "params_ratio": round(pruned["params"] / full["params"], 4),
        "train_time_ratio": round(pruned["training"]["train_s"] / full["training"]["train_s"], 4),
        "inference_time_ratio": round(
            pruned["inference"]["inference_s_per_audio_s"] / full["inference"]["inference_s_per_audio_s"], 4
        ),
    }


def _save_head(head: nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.detach().to("cpu").contiguous() for k, v in head.state_dict().items()}, str(tmp))
