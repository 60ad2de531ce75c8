"""The evaluation engine: SUPERB-style downstream training on cached frozen features.

For each task: read its manifests, get every layer's hidden states from the feature cache
(extracting them on a miss; an utterance-level task whose head is linear up to its mean pooling
gets each layer's per-utterance mean instead of the frames, which gives the same logits at a
fraction of the bytes and time: :func:`feature_kind`), fit the label vocabulary on train, train s3prl's Featurizer (a learned
softmax-weighted sum of layers) and the task's head on train, keep the step that is best on valid,
and report test. With ``lr_sweep`` the preset's small grid of learning rates is tried and the
rate best on valid wins. One JSON record per (upstream, task) is written.

The recipe is flat (setup / train / evaluate), seeded, with length-bucketed batches.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.records import Record, write_record
from harness.evaluation import provenance, superb_macs
from harness.evaluation.cache import FeatureCache
from harness.evaluation.config import UTTERANCE_FEATURES, EvaluateConfig
from harness.evaluation.entries import LayerPrefix, UpstreamSpec, entry_key
from harness.evaluation.extraction import probe_shape
from harness.evaluation.heads import (
    DownstreamModel,
    SplitData,
    TrainResult,
    format_metrics,
    predict,
    train_head,
)
from harness.evaluation.online import OnlineSet
from harness.evaluation.plan import Budget, SplitPlan, entry_bytes, format_plan
from harness.training import Runtime, setup_runtime
from tasks.base import Task, TaskPreset
from tasks.corpora.checksums import audio_identity, read_checksums
from tasks.corpora.manifest import SPLITS, CorpusInfo, read_manifest
from tasks.registry import get_task
from upstreams.cost import measure_upstream_cost
from upstreams.identity import checkpoint_hash
from upstreams.s3prl_hub import build_upstream, check_checkpoint, check_upstream_name

logger = logging.getLogger(__name__)

COST_FIELDS = ("params", "macs", "input_seconds", "macs_per_second", "latency_s", "real_time_factor")
SUPERB_MACS_FIELDS = ("macs_superb_g", "macs_superb_utterances")  # LibriSpeech test-clean only


# ------------------------------------------------------------------------------------- engine


class _LazyUpstream:
    """Builds the upstream on first use only, so a run served from the cache never loads it."""

    def __init__(self, name: str, ckpt: str | None) -> None:
        self.name, self.ckpt, self._module = name, ckpt, None

    def __call__(self) -> nn.Module:
        if self._module is None:
            logger.info("loading upstream %s%s", self.name, f" from {self.ckpt}" if self.ckpt else "")
            self._module = build_upstream(self.name, self.ckpt)
        return self._module


def feature_kind(task: Task, preset: TaskPreset, utterance_features: str = "auto") -> str:
    """What ``task`` trains on: ``pooled`` statistics where that is exact, else ``frames``.

    Pooled needs a head linear up to its mean pooling (:attr:`tasks.base.Task.pools_linearly`) and
    no random crop of training utterances (the mean of a crop is not in the statistics);
    ``utterance_features="frames"`` (``--utterance-features frames``) always reads frames.
    """
    if utterance_features not in UTTERANCE_FEATURES:
        raise ValueError(f"--utterance-features {utterance_features!r}: choose one of {', '.join(UTTERANCE_FEATURES)}")
    exact = task.pools_linearly and preset.train.max_train_seconds is None
    return "pooled" if exact and utterance_features == "auto" else "frames"


def load_split(
    task: Task,
    config: EvaluateConfig,
    split: str,
    cache: FeatureCache,
    spec: UpstreamSpec,
    upstream: _LazyUpstream,
    checksums: dict[str, str],
    device: str,
    kind: str = "frames",
    shape: Callable[[], tuple[int, int, int]] | None = None,
    runtime: Runtime | None = None,
    prefix: tuple[UpstreamSpec, int] | None = None,
) -> tuple[SplitData, float]:
    """Manifest rows, references and features (of ``kind``, as :func:`split_plans` decided: pooled,
    frames, or online, read by :class:`harness.evaluation.online.OnlineSet` with ``shape()`` = the upstream's
    (layers, dim, stride) and never cached) of one split; returns extraction seconds too. With
    ``prefix`` (the model this one is a cut of, and its hidden states), the parent's cached entry
    of the same audio and kind is read in place when there is one."""
    manifest = task.manifest_for(config.corpus)
    frame = read_manifest(config.corpus, manifest, split)
    if frame.empty:
        raise ValueError(f"{config.corpus}: manifest {manifest}/{split} has no rows")
    identities = [audio_identity(p, checksums) for p in frame["wav_path"]]
    durations = list(frame["duration"].astype(float))
    if kind == "online":
        online = OnlineSet(list(frame["wav_path"]), identities, durations, upstream, shape(), spec.dtype,
                           config.extract_batch_seconds)  # fmt: skip
        return SplitData(online, online.rows(identities), task.references(frame), list(frame["id"])), 0.0
    if prefix is not None:
        parent = cache.load(entry_key(prefix[0], identities, kind), kind)
        if parent is not None:
            logger.info("features %s/%s (%s): the first %d hidden states of %s", manifest, split, kind, prefix[1], parent.directory)
            view = LayerPrefix(parent, prefix[1])
            return SplitData(view, view.rows(identities), task.references(frame), list(frame["id"])), 0.0
    features, seconds = cache.get_or_extract(
        spec, list(frame["wav_path"]), identities, durations, upstream,
        device=device, batch_seconds=config.extract_batch_seconds, description=f"{manifest}/{split}",
        kind=kind, rank=runtime.rank if runtime else 0, world_size=runtime.world_size if runtime else 1,
    )
    data = SplitData(features, features.rows(identities), task.references(frame), list(frame["id"]))
    return data, seconds


@dataclass
class Session:
    """What every task of one run shares: device, corpus, upstream identity, cache and cost."""

    config: EvaluateConfig
    device: str
    corpus_info: CorpusInfo
    checksums: dict[str, str]
    spec: UpstreamSpec
    cache: FeatureCache
    upstream: _LazyUpstream
    cost: dict[str, Any]
    provenance: dict[str, Any]
    budget: Budget | None = None
    runtime: Runtime | None = None  # this process's rank under torchrun
    prefix: tuple[UpstreamSpec, int] | None = None  # (parent, hidden states) with features_from (prefix_parent)

    def shape(self) -> tuple[int, int, int]:
        """The upstream's (layers, dim, stride), from one second of audio (cached beside the cost)."""
        name = f"shape-{self.spec.key()}"
        found = self.cache.read_info(name)
        if found is None:
            found = {"shape": list(probe_shape(self.upstream(), self.device))}
            self.cache.write_info(name, found)
        return tuple(found["shape"])


def prefix_parent(config: EvaluateConfig, dtype: str) -> tuple[UpstreamSpec, int] | None:
    """With ``config.features_from``: the parent's identity and how many of its hidden states
    ``--ckpt`` computes, after checking that ``--ckpt`` is exactly the parent cut to its first
    layers (the architecture and every tensor of :func:`upstreams.pruning.truncate_state`'s cut).
    The cut computes those states with the same operations on the same batches, so the parent's
    cached features, sliced, are its own (:class:`harness.evaluation.cache.LayerPrefix`)."""
    if config.features_from is None:
        return None
    from upstreams.checkpoint import is_complete_checkpoint, truncation_depth

    for path, what in ((config.ckpt, "--ckpt"), (config.features_from, "features_from")):
        if path is None or not is_complete_checkpoint(path):
            raise ValueError(f"{what} {path!r}: features are shared only between compact checkpoint directories")
    depth = truncation_depth(config.ckpt, config.features_from)
    if depth is None:
        raise ValueError(f"{config.ckpt} is not {config.features_from} cut to its first layers, so it cannot read "
                         "that model's features; evaluate it without features_from")  # fmt: skip
    return UpstreamSpec(config.upstream, config.features_from, checkpoint_hash(config.features_from), dtype), depth + 1


def setup(config: EvaluateConfig) -> Session:
    """Check names and presets, read the corpus, identify the upstream and get its cost (cached)."""
    for name in config.tasks:  # unknown names and presets fail before any work
        get_task(name).preset(config.preset)
    check_upstream_name(config.upstream)
    check_checkpoint(config.upstream, config.ckpt, config.trust_checkpoint)
    runtime = setup_runtime(config.device)  # joins the process group under torchrun
    device = str(runtime.device)
    ckpt_sha256 = config.ckpt_sha256 or checkpoint_hash(config.ckpt)  # the caller's, when it has hashed it already
    spec = UpstreamSpec(config.upstream, config.ckpt, ckpt_sha256, extraction_dtype(config.extract_dtype, device))
    cache = FeatureCache(config.cache_dir)
    upstream = _LazyUpstream(config.upstream, config.ckpt)
    cost_name = f"cost-{spec.key()}-{torch.device(device).type}"
    cost = cache.read_info(cost_name)
    if cost is None:
        cost = measure_upstream_cost(upstream().to(device), config.ckpt)
        cache.write_info(cost_name, cost)
    if superb_macs.applies(config.corpus):  # LibriSpeech test-clean: MACs as the SUPERB challenge counts them
        info_name = f"superb-macs-{spec.key()}-{CorpusInfo.read(config.corpus).fingerprint}"
        counted = cache.read_info(info_name)
        if counted is None:
            try:
                counted = superb_macs.challenge_macs(upstream().to(device), config.corpus)
                cache.write_info(info_name, counted)
            except ValueError as err:  # a test-clean subset: the figure would not be the challenge's
                logger.warning("%s: no SUPERB-challenge MACs (%s)", config.corpus, err)
                counted = {}
        cost = {**cost, **counted}
    return Session(
        config, device, CorpusInfo.read(config.corpus), read_checksums(config.corpus), spec, cache, upstream,
        cost, provenance.checkpoint_provenance(config.ckpt), Budget(config.cache_dir, config.cache_budget_gb), runtime,
        prefix_parent(config, spec.dtype),
    )


def split_plans(session: Session, tasks: list[str] | None = None) -> list[SplitPlan]:
    """Each (task, split) of ``tasks`` (default: the run's): its features' kind, granted from the
    session's cache budget in the order the run reads them (:mod:`harness.evaluation.plan`); raises when a
    pooled entry cannot fit."""
    config = session.config
    rtf = session.cost.get("real_time_factor")
    plans, planned = [], set()
    for name in tasks or config.tasks:
        task = get_task(name)
        kind = feature_kind(task, task_preset(task, config.preset, config.max_steps), config.utterance_features)
        manifest = task.manifest_for(config.corpus)
        for split in SPLITS:
            frame = read_manifest(config.corpus, manifest, split)
            identities = [audio_identity(p, session.checksums) for p in frame["wav_path"]]
            durations = list(frame["duration"].astype(float))
            key = entry_key(session.spec, identities, kind)
            cached = key in planned or session.cache.has(key)  # ASR, PR and SID share their audio's entries
            estimate = 0 if cached else entry_bytes(kind, durations, session.shape())
            granted = session.budget.grant(kind, cached, estimate, f"{manifest}/{split}")
            if granted != "online":
                planned.add(key)
            hours = sum(durations) / 3600
            new_bytes = 0 if cached or granted == "online" else estimate
            plans.append(SplitPlan(name, split, len(frame), hours, granted, cached, new_bytes, hours * rtf if rtf else None))
    return plans


def plan(config: EvaluateConfig) -> str:
    """What ``evaluate(config)`` would read, store and extract, computed without extracting anything."""
    session = setup(config)
    plans = split_plans(session)
    return format_plan(plans, session.budget, session.device, session.cost.get("real_time_factor"))


def extraction_dtype(name: str, device: str) -> str:
    """``--extract-dtype``: ``auto`` is bf16 autocast on a GPU that supports it, float32 elsewhere."""
    if name != "auto":
        return name
    kind = torch.device(device).type
    return "bfloat16" if kind == "cuda" and torch.cuda.is_bf16_supported() else "float32"


def evaluate(config: EvaluateConfig) -> list[Path]:
    """Run every task of ``config`` with every head seed (``config.evaluation_seeds()``), on one
    session (the checkpoint hashed, the corpus read and the cost measured once); returns the paths
    of the records written."""
    session = setup(config)
    kinds = {(p.task, p.split): p.kind for p in split_plans(session)}  # the plan guards the run: before any work
    paths = [evaluate_task(session, get_task(name), kinds, seed) for name in config.tasks for seed in config.evaluation_seeds()]
    return [path for path in paths if path is not None]  # rank 0's; none on the other ranks


def task_preset(task: Task, name: str, max_steps: int | None = None) -> TaskPreset:
    """The head and schedule a run uses: the task's preset ``name``, its steps capped by ``max_steps``."""
    preset = task.preset(name)
    if max_steps is not None:
        preset.train.steps = min(preset.train.steps, max_steps)
        preset.train.eval_every = min(preset.train.eval_every, preset.train.steps)
    return preset


def same_schedule(record: Record, task: Task, name: str, max_steps: int | None = None) -> bool:
    """Whether ``record`` was made with the head and schedule a run with these settings would use now
    (a record made under an older version of the preset is not a result of this one)."""
    wanted = json.loads(json.dumps(task_preset(task, name, max_steps).to_dict()))
    made = record.config
    return made.get("preset") == name and all(made.get(key) == value for key, value in wanted.items())


def evaluate_task(
    session: Session, task: Task, kinds: dict[tuple[str, str], str] | None = None, seed: int | None = None
) -> Path | None:
    """Features, labels, training (one run per learning rate), selection on valid, test, record.

    ``kinds`` maps (task, split) to the features planned by :func:`split_plans`; without it the
    task's splits are planned here. ``seed`` is the head's (None: ``config.seed``).
    """
    config = session.config
    seed = config.seed if seed is None else seed
    preset = task_preset(task, config.preset, config.max_steps)
    if kinds is None:
        kinds = {(p.task, p.split): p.kind for p in split_plans(session, [task.name])}
    data, extraction = {}, {}
    for split in SPLITS:
        data[split], extraction[split] = load_split(
            task, config, split, session.cache, session.spec, session.upstream, session.checksums, session.device,
            kinds[task.name, split], session.shape, session.runtime, session.prefix,
        )  # fmt: skip
    task.fit_labels(data["train"].references)
    data["train"].targets = [task.encode(ref) for ref in data["train"].references]

    lrs = preset.train.lr_grid if config.lr_sweep else (preset.train.lr,)
    results = [train_head(task, preset, data["train"], data["valid"], lr, seed, session.device, session.runtime)
               for lr in lrs]  # fmt: skip
    best = results[0]
    for result in results[1:]:
        if task.is_better(result.valid_metrics[task.main_metric], best.valid_metrics[task.main_metric]):
            best = result

    test_start = time.perf_counter()
    model = DownstreamModel(data["train"].features, task.build_head(data["train"].features.hidden_size, preset.head))
    model.load_state_dict(best.state)
    predictions = predict(model.to(session.device), task, data["test"], preset.train.eval_batch_size, session.device,
                          session.runtime)  # fmt: skip
    test_metrics = task.score(data["test"].references, predictions)
    per_utterance = {"metric": task.main_metric, "ids": data["test"].ids,
                     **task.utterance_counts(data["test"].references, predictions)}  # fmt: skip
    timing = {
        "extraction_s": round(sum(extraction.values()), 3),
        "extraction_by_split_s": {k: round(v, 3) for k, v in extraction.items()},
        "feature_cache_hits": {k: v == 0.0 for k, v in extraction.items()},
        "feature_kind_by_split": {split: d.features.kind for split, d in data.items()},
        "features_from_sha256": {split: session.prefix[0].ckpt_sha256 for split, d in data.items()
                                 if isinstance(d.features, LayerPrefix)},  # fmt: skip
        "training_s": round(sum(r.seconds for r in results), 3),
        "test_s": round(time.perf_counter() - test_start, 3),
    }
    logger.info("%s on %s: test %s (lr %g, step %d)", config.upstream, task.name, format_metrics(test_metrics), best.lr, best.best_step)
    record = _task_record(session, task, preset, data, results, best, test_metrics, timing, per_utterance, seed)
    if session.runtime is not None and not session.runtime.is_main:
        return None  # under torchrun only rank 0 writes the record
    path = write_record(record, config.records_dir)
    logger.info("record written: %s", path)
    return path


def _task_record(
    session: Session,
    task: Task,
    preset: TaskPreset,
    data: dict[str, SplitData],
    results: list[TrainResult],
    best: TrainResult,
    test_metrics: dict[str, float],
    timing: dict[str, Any],
    per_utterance: dict[str, Any],
    seed: int,
) -> Record:
    config, features = session.config, data["train"].features
    ckpt = config.ckpt
    return provenance.build_record(
        task={
            "name": task.name,
            "metrics": list(task.metric_names),
            "main_metric": task.main_metric,
            "higher_is_better": task.higher_is_better,
        },
        metrics={"test": test_metrics, "valid": best.valid_metrics},
        upstream={
            "name": config.upstream,
            "ckpt": str(Path(ckpt).resolve()) if ckpt and Path(ckpt).exists() else ckpt,
            "ckpt_sha256": session.spec.ckpt_sha256,
            "num_layers": features.num_layers,
            "hidden_size": features.hidden_size,
            "downsample_rate": features.downsample_rate,
            **{k: session.cost.get(k) for k in COST_FIELDS},
            **{k: session.cost[k] for k in SUPERB_MACS_FIELDS if k in session.cost},
            "cost_source": session.cost.get("source"),
            **session.provenance,
        },
        corpus={
            "name": session.corpus_info.name,
            "source": session.corpus_info.source,
            "root": str(Path(config.corpus).resolve()),
            "fingerprint": session.corpus_info.fingerprint,
            "utterances": {split: len(d.ids) for split, d in data.items()},
        },
        config={
            "preset": config.preset,
            **preset.to_dict(),
            "lr": best.lr,
            "lr_sweep": config.lr_sweep,
            "max_steps": config.max_steps,
            "extract_dtype": session.spec.dtype,
            "labels": task.label_state(),
        },
        seeds={"train": seed},
        timing=timing,
        device=provenance.device_description(session.device),
        extra={
            "selection": {"best_lr": best.lr, "best_step": best.best_step, "split": "valid"},
            "lr_sweep": [{"lr": r.lr, "best_step": r.best_step, "valid": r.valid_metrics} for r in results],
            "history": {f"{r.lr:g}": r.history for r in results},
            "layer_weights": best.layer_weights,
            "command": config.command,
            "per_utterance": per_utterance,
        },
    )
