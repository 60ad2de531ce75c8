"""Convexity-based layer pruning (Dorszewski, Tetkova, Hansen 2024) as a compression method.

1. Pool the teacher's hidden states over labelled segments of a prepared corpus:
   ``word`` (single-word clips, pooled over the word's alignment when there is one),
   ``phone`` (phone alignments), ``speaker`` (whole utterances of the SID manifests).
2. Score every hidden state with graph convexity, and beside it linear-probe accuracy and
   block influence (``harness.compression.convexity.graph`` / ``layer_scores``).
3. Keep the transformer layers up to where convexity peaks or stops rising
   (``harness.compression.convexity.selection``), truncate the teacher, save a compact checkpoint.

4. With ``finetune=TASK``: fine-tune the pruned encoder and, for comparison, the full teacher
   end to end with the task's head (``harness.finetune``).

Outputs in ``out``: the compact checkpoint (``config.json``, ``model.safetensors``, ``cost.json``),
``convexity.json`` (curves, probes, block influence, the rule and the choice) and ``convexity.png``;
with ``finetune``, also ``finetune-TASK.json`` and ``finetuned-TASK/``.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from core.files import write_json
from core.paths import CHECKPOINTS_FILE, portable_path
from harness.compression.convexity.curves import attach_curves, read_curves_file, write_curves_file
from harness.compression.convexity.graph import ConvexityConfig, graph_convexity_per_layer
from harness.compression.convexity.layer_scores import block_influence, linear_probe_per_layer
from harness.compression.convexity.options import (
    AVERAGES,
    DEFAULT_AVERAGE,
    DEFAULT_DEPTHS,
    DEFAULT_LABELS,
    DEFAULT_RULE,
    LABEL_TYPES,
    MAX_POINTS,
    check_options,
    parse_labels,
)
from harness.compression.convexity.plot import plot_convexity
from harness.compression.convexity.selection import select_layers
from harness.devices import resolve_device
from tasks.audio import load_audio
from tasks.corpora.manifest import SPLITS, ManifestError, parse_alignment, read_manifest

logger = logging.getLogger(__name__)

FRAME_SECONDS = 0.02  # 320 samples at 16 kHz, the stride of every supported encoder


@dataclass
class Segment:
    """One labelled stretch of an utterance, pooled into one vector per hidden state."""

    wav_path: str
    label: str
    start: float | None = None  # seconds; None = the whole utterance
    end: float | None = None


def labelled_segments(corpus: str | os.PathLike, label_type: str, max_points: int, seed: int) -> list[Segment]:
    """Up to ``max_points`` segments of one label type from all splits of a prepared corpus,
    balanced over classes (at most ``ceil(max_points / classes)`` per class)."""
    if label_type == "word":
        frames = _manifests(corpus, "words", label_type)
        segments = []
        for row in frames.itertuples():
            words = [w for w in parse_alignment(getattr(row, "word_alignment", "")) if w[0] == row.label]
            start, end = (words[0][1], words[0][2]) if words else (None, None)
            segments.append(Segment(row.wav_path, row.label, start, end))
    elif label_type == "speaker":
        frames = _manifests(corpus, "sid", label_type)
        segments = [Segment(row.wav_path, row.label) for row in frames.itertuples()]
    elif label_type == "phone":
        frames = _manifests(corpus, "pr", label_type)
        if "phone_alignment" not in frames.columns or not (frames["phone_alignment"] != "").any():
            raise ManifestError(f"{corpus}: phone labels need phone alignments (SynthSpeech has them; this corpus has none)")
        segments = [
            Segment(row.wav_path, phone, start, end)
            for row in frames.itertuples()
            for phone, start, end in parse_alignment(row.phone_alignment)
        ]
    else:
        raise ValueError(f"unknown label type {label_type!r}; choose from {', '.join(LABEL_TYPES)} or all")
    return _balanced_sample(segments, max_points, seed)


def _manifests(corpus, task: str, label_type: str):
    import pandas as pd

    parts = []
    for split in SPLITS:
        try:
            parts.append(read_manifest(corpus, task, split))
        except ManifestError:
            continue
    if not parts:
        raise ManifestError(f"{corpus}: {label_type} labels need the '{task}' manifests, which this corpus lacks")
    return pd.concat(parts, ignore_index=True)


def _balanced_sample(segments: list[Segment], max_points: int, seed: int) -> list[Segment]:
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[Segment]] = {}
    for segment in segments:
        by_label.setdefault(segment.label, []).append(segment)
    per_class = max(2, math.ceil(max_points / max(1, len(by_label))))
    chosen = []
    for label in sorted(by_label):
        members = by_label[label]
        if len(members) < 2:
            continue  # a class of one has no pairs to score
        picks = rng.choice(len(members), size=min(per_class, len(members)), replace=False)
        chosen.extend(members[i] for i in sorted(picks))
    return chosen




@torch.no_grad()
def pooled_hidden_states(model, segments: list[Segment], device: torch.device) -> list[np.ndarray]:
    """Mean-pooled hidden states of each segment: one ``[len(segments), D]`` array per hidden state."""
    model = model.to(device).eval()
    by_wav: dict[str, list[int]] = {}
    for index, segment in enumerate(segments):
        by_wav.setdefault(segment.wav_path, []).append(index)
    pooled: list[np.ndarray] | None = None
    for wav_path, indices in tqdm(by_wav.items(), desc="hidden states", unit="file"):
        hidden, _ = model(load_audio(wav_path)[None].to(device))
        states = torch.stack([h[0] for h in hidden]).float()  # [states, frames, D]
        if pooled is None:
            pooled = [np.zeros((len(segments), states.shape[-1]), np.float32) for _ in range(states.shape[0])]
        for index in indices:
            first, last = _frame_span(segments[index], states.shape[1])
            vectors = states[:, first:last].mean(dim=1).cpu().numpy()
            for state, vector in zip(pooled, vectors, strict=True):
                state[index] = vector
    return pooled or []


def _frame_span(segment: Segment, num_frames: int) -> tuple[int, int]:
    """Frames overlapping the segment; at least one frame even for a 0 ms segment."""
    if segment.start is None:
        return 0, num_frames
    first = min(num_frames - 1, max(0, int(segment.start / FRAME_SECONDS)))
    last = min(num_frames, max(first + 1, math.ceil(segment.end / FRAME_SECONDS)))
    return first, last


@dataclass
class LayerScores:
    """Per label type, one score per hidden state: graph convexity (``curves``), linear-probe accuracy
    and block influence (``probes``, ``influence``: empty when not asked for), and the segment counts."""

    curves: dict[str, list[float]]
    probes: dict[str, list[float]]
    influence: dict[str, list[float]]
    counts: dict[str, dict[str, int]]
    by_average: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # "classes"/"pairs" -> curves


def score_layers(
    model,
    corpus: str | os.PathLike,
    label_types: tuple[str, ...],
    max_points: int,
    seed: int,
    device: torch.device,
    probes: bool = True,
    average: str = "classes",
) -> LayerScores:
    """Score every hidden state of ``model`` on labelled segments of ``corpus``: graph convexity and,
    with ``probes``, linear-probe accuracy and block influence. One forward pass per file serves
    every label type. ``curves`` hold the convexity by ``average`` (over classes, or over pairs as
    nnconvexity does); ``by_average`` holds both. Raises ``ValueError`` when a label type has fewer
    than two usable classes."""
    segments = {t: labelled_segments(corpus, t, max_points, seed) for t in label_types}
    for label_type, chosen in segments.items():
        classes = len({s.label for s in chosen})
        if classes < 2:
            raise ValueError(f"{corpus}: fewer than two {label_type} classes with two examples; cannot score convexity")
        logger.info("%s: %d segments in %d classes", label_type, len(chosen), classes)
    everything = [s for chosen in segments.values() for s in chosen]
    pooled = pooled_hidden_states(model, everything, device)

    scores = LayerScores({}, {}, {}, {})
    offset = 0
    for label_type, chosen in segments.items():
        layers = [state[offset : offset + len(chosen)] for state in pooled]
        offset += len(chosen)
        names = [s.label for s in chosen]
        results = graph_convexity_per_layer(layers, names, ConvexityConfig(seed=seed, device=str(device)))
        for name in AVERAGES:
            scores.by_average.setdefault(name, {})[label_type] = [round(float(r.value(name)), 3) for r in results]
        scores.curves[label_type] = scores.by_average[average][label_type]
        if probes:
            scores.probes[label_type] = [round(float(a), 4) for a in linear_probe_per_layer(layers, names, seed=seed, max_iter=300)]
            scores.influence[label_type] = [round(float(b), 5) for b in block_influence(layers)]
        scores.counts[label_type] = {"segments": len(chosen), "classes": len(set(names))}
    return scores


def cached_score_layers(
    teacher: str,
    model,
    corpus: str | os.PathLike,
    label_types: tuple[str, ...],
    max_points: int,
    seed: int,
    device: torch.device,
    probes: bool = True,
    average: str = "classes",
    cache: str | os.PathLike | None = None,
) -> LayerScores:
    """:func:`score_layers` of ``model`` (loaded from the spec ``teacher``), read from ``cache`` when
    the same scoring is there (``harness.compression.convexity.scores_cache``) and written to it when not;
    ``cache`` None scores every time."""
    from harness.compression.convexity.scores_cache import load_scores, save_scores, scores_key
    from tasks.corpora.manifest import corpus_fingerprint
    from upstreams.identity import checkpoint_hash

    if cache is None:
        return score_layers(model, corpus, label_types, max_points, seed, device, probes=probes, average=average)
    from filelock import FileLock

    key = scores_key(checkpoint_hash(teacher), corpus_fingerprint(corpus), label_types, max_points, seed)
    Path(cache).mkdir(parents=True, exist_ok=True)
    with FileLock(str(Path(cache) / f".{key}.lock")):  # compressions side by side: one scores, the others wait and read
        fields = load_scores(cache, key, probes)
        if fields is not None and set(label_types) <= set(fields["by_average"].get(average, {})):
            logger.info("convexity scores of %s read from %s (%s)", teacher, cache, key)
            return LayerScores(dict(fields["by_average"][average]), fields["probes"], fields["influence"], fields["counts"],
                               fields["by_average"])  # fmt: skip
        scores = score_layers(model, corpus, label_types, max_points, seed, device, probes=probes, average=average)
        fields = {"probes": scores.probes, "influence": scores.influence, "counts": scores.counts,
                  "by_average": scores.by_average}  # fmt: skip
        logger.info("convexity scores of %s kept in %s", teacher, save_scores(cache, key, fields, with_probes=probes))
        return scores


def _other_average(scores: LayerScores, average: str) -> tuple[str, dict[str, list[float]]]:
    """The curves by the average the rule does not use, for the plot."""
    other = next(name for name in AVERAGES if name != average)
    return other, scores.by_average[other]


def write_task_cut(
    teacher: str, out: str | os.PathLike, curve: list[float], label: str, rule: str, task: str
) -> Path | None:
    """The teacher cut where ``label``'s convexity ``curve`` says (``rule``), for ``task`` alone:
    a compact checkpoint in ``out`` (reused when it holds that cut: the same label and depth), or
    None when the curve keeps every layer (the cut would be the teacher itself)."""
    from upstreams import load_upstream
    from upstreams.checkpoint import is_complete_checkpoint, read_compact_config

    selection = select_layers({label: curve}, rule)
    out = Path(out)
    if is_complete_checkpoint(out):
        made = read_compact_config(out)[1].get("compression", {})
        if made.get("labels") == [label] and made.get("kept_layers") == selection.num_layers:
            attach_curves(out, {label: curve})
            return out
    model = load_upstream(teacher)
    if selection.num_layers >= model.config.num_layers:
        return None
    summary = {"method": "convexity", "teacher": portable_path(teacher), "labels": [label], "rule": rule, "cut_for": task,
               "teacher_layers": model.config.num_layers, "teacher_params": model.num_params(), "reason": selection.reason}  # fmt: skip
    _save_depth(model, selection.num_layers, out, summary)
    attach_curves(out, {label: curve})
    return out


def write_task_cuts(teacher: str, out: str | os.PathLike, labels: dict[str, str], cuts_dir: str | os.PathLike) -> dict:
    """After a finished convexity compression in ``out``: per task, the teacher cut where the curve
    of its label type (``labels``: task -> label type) says, in ``cuts_dir/TASK``; returns task ->
    compact checkpoint, or None where the curve keeps every layer (or the file has no such curve)."""
    found = read_curves_file(out)
    cuts = {}
    for task, label in labels.items():
        if label not in found.curves:
            logger.warning("%s: no %s convexity curve in %s; no cut for %s", task, label, out, task)
            cuts[task] = None
            continue
        cuts[task] = write_task_cut(teacher, Path(cuts_dir) / task, found.curves[label], label, found.rule, task)
        if cuts[task] is None:
            logger.info("%s: the %s curve keeps every layer; its cut is the teacher", task, label)
    return cuts


def depth_sparsities(teacher: str) -> list[float]:
    """The sparsity of the teacher truncated to each depth 1 .. L-1 (what ``depths="all"`` writes)."""
    from upstreams import load_upstream

    model = load_upstream(teacher)
    total = model.num_params()
    return [1 - model.truncate(k).num_params() / total for k in range(1, model.config.num_layers)]


def _save_depth(model, layers: int, out: Path, summary: dict) -> Path:
    """The first ``layers`` layers of ``model`` as a compact checkpoint in ``out``, with its cost."""
    from upstreams.checkpoint import save_compact
    from upstreams.cost import measure_cost, record_cost

    compact = model.truncate(layers)
    sparsity = round(1 - compact.num_params() / model.num_params(), 4)
    metadata = {**summary, "sparsity": sparsity, "achieved_sparsity": sparsity, "dir": str(out),
                "kept_layers": layers, "params": compact.num_params()}  # fmt: skip
    save_compact(compact, out, metadata={"compression": metadata})
    record_cost(out, measure_cost(compact))
    return out


def compress_convexity(
    teacher: str,
    out: str | os.PathLike,
    *,
    corpus: str | os.PathLike,
    preset: str = "demo",
    device: str | None = None,
    labels: str = DEFAULT_LABELS,
    rule: str = DEFAULT_RULE,
    depths: str = DEFAULT_DEPTHS,
    max_points: int | None = None,
    seed: int = 0,
    finetune: str | None = None,
    finetune_steps: int | None = None,
    average: str = DEFAULT_AVERAGE,
    scores_cache: str | os.PathLike | None = None,
    **unused,
) -> Path:
    """Score the teacher's layers, choose how many to keep, write the truncated compact checkpoint
    (``depths="all"``: one per depth 1 .. L-1 in ``out/layers-K``, listed in ``out/checkpoints.json``,
    the rule's depth marked ``selected``); with ``finetune`` (a task name), then fine-tune the rule's
    model and the teacher on that task and compare. ``scores_cache``: a folder that keeps the
    teacher's convexity scores for the next compression that needs the same ones (None: not kept)."""
    from harness.finetune import check_task_data, finetune_pair
    from upstreams import load_upstream

    out = Path(out)
    check_options(preset, {"labels": labels, "rule": rule, "depths": depths, "max_points": max_points, "average": average,
                           "finetune": finetune, "finetune_steps": finetune_steps})  # before any scoring, not after it
    max_points = max_points or MAX_POINTS[preset]
    label_types = parse_labels(labels)
    if finetune is not None:
        check_task_data(finetune, corpus, preset)  # fail before the scoring, not after
    torch_device = torch.device(resolve_device(device))
    model = load_upstream(teacher)
    started = time.perf_counter()

    average = average or DEFAULT_AVERAGE
    scores = cached_score_layers(teacher, model, corpus, label_types, max_points, seed, torch_device, average=average,
                                 cache=scores_cache)  # fmt: skip
    curves, probes, influence, counts = scores.curves, scores.probes, scores.influence, scores.counts

    selection = select_layers(curves, rule)
    summary = {"method": "convexity", "teacher": portable_path(teacher), "labels": list(label_types), "rule": rule,
               "teacher_layers": model.config.num_layers, "teacher_params": model.num_params(), "reason": selection.reason}  # fmt: skip
    if average != DEFAULT_AVERAGE:  # (the default stays out: the same bytes, the same checkpoint hashes as before)
        summary["average"] = average
    if depths == "all":
        folders = [
            _save_depth(model, k, out / f"layers-{k}", {**summary, "selected": k == selection.num_layers})
            for k in range(1, model.config.num_layers)
        ]
    else:
        folders = [_save_depth(model, selection.num_layers, out, summary)]
    for folder in folders:
        attach_curves(folder, curves)
    sparsity = 1 - model.truncate(selection.num_layers).num_params() / model.num_params()
    write_curves_file(out, curves, selection.num_layers, selection=selection.to_dict(), linear_probe=probes,
                      block_influence=influence, counts=counts, corpus=str(corpus),
                      seconds=round(time.perf_counter() - started, 1), average=average, by_average=scores.by_average)  # fmt: skip
    plot_convexity(curves, out / "convexity.png", selection=selection, title=f"Graph convexity per layer: {teacher}",
                   other=_other_average(scores, average))  # fmt: skip
    if depths == "all":  # last: marks the sweep finished
        write_json(out / CHECKPOINTS_FILE, {"checkpoints": [folder.name for folder in folders],
                                            "selected": f"layers-{selection.num_layers}"})  # fmt: skip
    logger.info("convexity pruning: %s; kept %d of %d layers (%.1f %% fewer parameters)",
                selection.reason, selection.num_layers, model.config.num_layers, 100 * sparsity)  # fmt: skip
    if finetune is not None:
        finetune_pair(out, teacher, finetune, corpus=corpus, preset=preset, device=str(torch_device), seed=seed,
                      steps=finetune_steps)  # fmt: skip
    return out
