"""Fine-tune a pruned encoder and its full teacher end to end on one task, and compare them.

The last step of convexity pruning (Dorszewski et al. 2024): the truncated encoder is fine-tuned
together with a task head, and its test score, training time and inference time are set against
the full model fine-tuned with the same schedule. Recipe (``finetune_pair``), flat::

    setup     the task (its preset's head), the train/valid/test manifests, labels fitted on train
    per model (pruned first, then full; same seed, same batches, same head initialisation)
      train   encoder + head on padded raw waveforms, the head on the encoder's last hidden state;
              Adam with the encoder at ``encoder_lr`` (lower) and the head at ``head_lr``, linear
              warm-up then decay; the CNN feature extractor frozen; validation every ``eval_every``
      select  the step best on valid (the task's main metric)
      test    the test metric, and inference seconds per second of test audio
    save      OUT/finetuned-TASK/ (the fine-tuned pruned encoder as a compact checkpoint, plus its
              head in head.safetensors), then OUT/finetune-TASK.json (written last: a rerun skips)

Timings: ``train_s`` sums the model work of the training steps (forward, backward, optimizer;
CUDA synchronised), without audio reading and validation, after one untimed warm-up step;
``train_s_per_step`` is the median step; ``train_wall_s`` is the training loop's wall time with
audio reading. Inference times the forward passes over the test split (batched,
after one warm-up batch). Both models run in one process with the same threads, one after the other.

Run::

    harness compress --method convexity --labels word --finetune sid --out runs/cvx
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from core.files import atomic_path, write_json
from core.paths import portable_path
from harness import provenance, training
from harness.evaluate import bucketed_batches
from tasks.audio import SAMPLE_RATE, load_audio
from tasks.base import Task, TaskPreset
from tasks.corpora.manifest import SPLITS, CorpusInfo, ManifestError, manifest_path, read_manifest
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


# ---------------------------------------------------------------------------------------- data
@dataclass
class WaveSplit:
    """One split of a task: wav paths, lengths in samples, references, utterance ids, and train targets."""

    paths: list[str]
    samples: np.ndarray  # [utterances], from the manifest's durations (for bucketing)
    references: list
    ids: list[str] = field(default_factory=list)
    targets: list[Tensor] = field(default_factory=list)


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


def read_split(task: Task, corpus: str | os.PathLike, split: str) -> WaveSplit:
    manifest = task.manifest_for(corpus)
    frame = read_manifest(corpus, manifest, split)
    if frame.empty:
        raise ManifestError(f"{corpus}: manifest {manifest}/{split} has no rows")
    samples = np.round(frame["duration"].astype(float).to_numpy() * SAMPLE_RATE).astype(np.int64)
    return WaveSplit(list(frame["wav_path"]), samples, task.references(frame), [str(i) for i in frame["id"]])


def load_batch(
    data: WaveSplit, batch: list[int], max_samples: int | None = None, rng: np.random.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Read and pad a batch; with ``max_samples``, longer utterances are cropped (at random with ``rng``).

    Returns:
        (Tensor, Tensor): waveforms ``[B, samples]`` float32 and valid samples ``[B]``.
    """
    pieces = []
    for i in batch:
        wav = load_audio(data.paths[i])
        if max_samples is not None and len(wav) > max_samples:
            start = int(rng.integers(0, len(wav) - max_samples + 1)) if rng is not None else 0
            wav = wav[start : start + max_samples]
        pieces.append(wav)
    lengths = torch.tensor([len(p) for p in pieces], dtype=torch.long)
    return nn.utils.rnn.pad_sequence(pieces, batch_first=True), lengths


# --------------------------------------------------------------------------------------- model
class EncoderWithHead(nn.Module):
    """A speech encoder and a task head on its last hidden state, trained together.

    Args:
        encoder: a ``SpeechEncoder``.
        head: ``forward(features [B, T, D], lengths [B]) -> output`` (a task's head).
        freeze_extractor: keep the CNN feature extractor's weights fixed.
    """

    def __init__(self, encoder: nn.Module, head: nn.Module, freeze_extractor: bool = True) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head
        if freeze_extractor:
            encoder.feature_extractor.requires_grad_(False)

    def forward(self, waveforms: Tensor, lengths: Tensor) -> tuple[Any, Tensor]:
        """``[B, samples]``, ``[B]`` -> (the head's output, valid frames ``[B]``)."""
        hidden, frame_lengths = self.encoder(waveforms, lengths)
        return self.head(self.encoder.last_hidden_state(hidden), frame_lengths), frame_lengths


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def predict(
    model: EncoderWithHead, task: Task, data: WaveSplit, batch_size: int, runtime: training.Runtime, warmup: bool = False
) -> tuple[list, float, float]:
    """Predictions in manifest order, the seconds of model work, and the seconds of audio.

    With ``warmup`` the first batch runs once untimed first (allocator and kernel start-up).
    """
    model.eval()
    order = np.argsort(data.samples, kind="stable")
    predictions: list = [None] * len(order)
    seconds, audio = 0.0, 0.0
    for index, start in enumerate(range(0, len(order), batch_size)):
        batch = order[start : start + batch_size].tolist()
        waveforms, lengths = load_batch(data, batch)
        waveforms, lengths = waveforms.to(runtime.device), lengths.to(runtime.device)
        if warmup and index == 0:
            with runtime.autocast():
                model(waveforms, lengths)
        _sync(runtime.device)
        began = time.perf_counter()
        with runtime.autocast():
            output, frame_lengths = model(waveforms, lengths)
        _sync(runtime.device)
        seconds += time.perf_counter() - began
        audio += float(lengths.sum()) / SAMPLE_RATE
        for i, prediction in zip(batch, task.decode(output, frame_lengths.cpu()), strict=True):
            predictions[i] = prediction
    return predictions, seconds, audio


# ------------------------------------------------------------------------------------ training
def finetune_model(
    label: str, encoder: nn.Module, task: Task, head_config: Any, config: FinetuneConfig,
    data: dict[str, WaveSplit], seed: int, runtime: training.Runtime,
) -> tuple[dict[str, Any], EncoderWithHead]:  # fmt: skip
    """Fine-tune ``encoder`` with a fresh head; returns its report and the model at the best valid step."""
    training.seed_everything(seed)
    rng = np.random.default_rng(seed)
    head = task.build_head(encoder.config.embed_dim, head_config)
    model = EncoderWithHead(encoder, head, config.freeze_extractor).to(runtime.device)
    optimizer = torch.optim.Adam([
        {"params": [p for p in encoder.parameters() if p.requires_grad], "lr": config.encoder_lr},
        {"params": list(head.parameters()), "lr": config.head_lr},
    ])  # fmt: skip
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, training.lr_factor_fn(config.steps, config.warmup))
    max_samples = round(config.max_train_seconds * SAMPLE_RATE) if config.max_train_seconds else None
    train = data["train"]
    batches = bucketed_batches(train.samples, config.batch_size, rng)

    # one untimed forward and backward (gradients discarded), so that start-up costs of the process
    # (allocator, kernels) do not land in the first model's training time
    waveforms, lengths = load_batch(train, list(range(min(config.batch_size, len(train.paths)))), max_samples)
    with runtime.autocast():
        output, frame_lengths = model(waveforms.to(runtime.device), lengths.to(runtime.device))
    task.loss(output, frame_lengths.cpu(), train.targets[: len(lengths)]).backward()
    optimizer.zero_grad(set_to_none=True)

    best_value, best_step, best_metrics, best_state = None, 0, {}, None
    history: list[dict[str, Any]] = []
    step_s, validation_s, losses = [], 0.0, []
    loop_began = time.perf_counter()
    bar = tqdm(range(1, config.steps + 1), desc=f"fine-tune {label} on {task.name}", unit="step")
    for step in bar:
        model.train()
        batch = next(batches)
        waveforms, lengths = load_batch(train, batch, max_samples, rng)
        waveforms, lengths = waveforms.to(runtime.device), lengths.to(runtime.device)
        _sync(runtime.device)
        began = time.perf_counter()
        with runtime.autocast():
            output, frame_lengths = model(waveforms, lengths)
        loss = task.loss(output, frame_lengths.cpu(), [train.targets[i] for i in batch])
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        _sync(runtime.device)
        step_s.append(time.perf_counter() - began)
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if step % config.eval_every == 0 or step == config.steps:
            began = time.perf_counter()
            predictions, _, _ = predict(model, task, data["valid"], config.eval_batch_size, runtime)
            metrics = task.score(data["valid"].references, predictions)
            validation_s += time.perf_counter() - began
            interval = losses[-(step - (history[-1]["step"] if history else 0)) :]
            history.append({"step": step, "train_loss": round(float(np.mean(interval)), 4),
                            **{f"valid_{k}": round(v, 3) for k, v in metrics.items()}})  # fmt: skip
            logger.info("%s on %s step %d: loss %.3f, valid %s", label, task.name, step, history[-1]["train_loss"],
                        ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()))  # fmt: skip
            if task.is_better(metrics[task.main_metric], best_value):
                best_value, best_step, best_metrics = metrics[task.main_metric], step, metrics
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    bar.close()
    train_wall_s = time.perf_counter() - loop_began - validation_s
    train_s = sum(step_s)

    model.load_state_dict(best_state)
    test = data["test"]
    predictions, inference_s, test_audio_s = predict(model, task, test, config.eval_batch_size, runtime, warmup=True)
    report = {
        "num_layers": encoder.config.num_layers,
        "params": encoder.num_params(),
        "head_params": sum(p.numel() for p in head.parameters()),
        "best_step": best_step,
        "valid": best_metrics,
        "test": task.score(test.references, predictions),
        # per test utterance, the counts whose summed ratio is the main metric (for bootstrap intervals)
        "per_utterance": {"ids": test.ids, **task.utterance_counts(test.references, predictions)},
        "training": {"steps": config.steps, "train_s": round(train_s, 3), "train_s_per_step": round(float(np.median(step_s)), 4),
                     "train_wall_s": round(train_wall_s, 3), "validation_s": round(validation_s, 3)},
        "inference": {"test_audio_s": round(test_audio_s, 2), "inference_s": round(inference_s, 4),
                      "inference_s_per_audio_s": inference_s / test_audio_s},
        "history": history,
    }  # fmt: skip
    logger.info("%s on %s: test %s; %.3f s per step (median), %.4f s per second of audio", label, task.name,
                report["test"], report["training"]["train_s_per_step"], inference_s / test_audio_s)  # fmt: skip
    return report, model


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
) -> Path:
    """Fine-tune the compact checkpoint ``pruned`` and the full ``teacher`` on ``task_name``.

    Writes ``OUT/finetune-TASK.json`` (``out`` defaults to ``pruned``) and, with ``save_finetuned``,
    ``OUT/finetuned-TASK/``; returns the JSON's path. If the JSON exists and was made with the same
    schedule, seed and corpus, nothing is done; made otherwise, it raises ``ValueError`` naming it
    (a report of another schedule is never passed off as this one's).
    ``schedule`` replaces the preset's schedule; ``steps`` overrides its steps.
    """
    from upstreams import load_upstream
    from upstreams.checkpoint import COST_NAME, load_compact, read_compact_config, save_compact

    out = Path(out if out is not None else pruned)
    report_path = out / f"finetune-{task_name}.json"
    task = check_task_data(task_name, corpus, preset)
    task_preset = task.preset(preset)
    config = resolve_schedule(preset, task_preset, steps, schedule)
    if report_path.is_file():
        _check_existing(report_path, config, seed, CorpusInfo.read(corpus).fingerprint)
        logger.info("%s exists; fine-tuning on %s skipped", report_path, task_name)
        return report_path
    runtime = training.setup_runtime(device)
    started = time.perf_counter()

    data = {split: read_split(task, corpus, split) for split in SPLITS}
    task.fit_labels(data["train"].references)
    data["train"].targets = [task.encode(ref) for ref in data["train"].references]
    logger.info("fine-tuning on %s: %s", task_name, ", ".join(f"{s} {len(d.paths)}" for s, d in data.items()))

    models = {}
    pruned_report, pruned_model = finetune_model("pruned", load_compact(pruned), task, task_preset.head, config, data, seed, runtime)
    models["pruned"] = {"source": portable_path(pruned), **pruned_report}
    full_report, _ = finetune_model("full", load_upstream(teacher), task, task_preset.head, config, data, seed, runtime)
    models["full"] = {"source": portable_path(teacher), **full_report}
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
        "corpus": {"root": portable_path(Path(corpus).resolve()), "fingerprint": CorpusInfo.read(corpus).fingerprint,
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
