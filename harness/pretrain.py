"""HuBERT-style self-supervised pretraining of a small teacher on a prepared corpus.

Recipe (Hsu et al. 2021, scaled down): iteration 1 predicts k-means clusters of MFCC features at
masked frames; iteration 2 predicts k-means clusters of an intermediate layer of the iteration-1
model. Span masking, cosine-similarity logits against learned cluster embeddings, cross-entropy on
masked frames (and, weighted by ``unmasked_weight``, on the unmasked ones).

Three departures from the paper, all because a CPU budget is thousands of steps, not 400k:

- the unmasked frames are predicted too (``unmasked_weight``, fairseq's ``pred_nomask_weight``;
  the paper uses 0). It gives the early layers a direct, local signal: after 500 steps of
  iteration 1 on SynthSpeech small, PER of the frozen features on SynthSpeech tiny (demo head)
  was 58.8 with weight 1 against 84.0 with the masked loss alone, and the masked loss itself fell
  faster (4.17 vs 4.38 at steps 300-400).

- features are normalised per utterance before k-means (``target_cmvn``). On SynthSpeech small,
  MFCC clusters then carry more phone information (NMI 0.371 vs 0.348) and less speaker
  information (0.105 vs 0.168); for layer features the speaker NMI falls from 0.115 to 0.030.
- iteration 2 starts from the iteration-1 encoder (``warm_start``) instead of from scratch. A
  short iteration 1 yields layer clusters worse than MFCC ones (phone NMI 0.17 vs 0.35), and a
  fresh model trained on them ended phonetically weaker than iteration 1 (PER 78 % vs 69 %).

Each iteration's target quality (NMI with phones and speakers, on the utterances with phone
alignments) is written to ``OUT/iter{1,2}/target_quality.json`` and the model card.

Layout of ``--out``::

    OUT/pretrain_config.json           the resolved configuration (a rerun must match it)
    OUT/iter{1,2}/targets.npz          cluster labels of every training utterance
    OUT/iter{1,2}/state.pt             last training state (resume point; weights-only torch file)
    OUT/iter{1,2}/log.jsonl            one line per step: loss, masked accuracy, learning rate
    OUT/iter{1,2}/model/               compact checkpoint when the iteration is finished
    OUT/teacher/                       the final compact checkpoint with MODEL_CARD.md

Every stage is skipped when its output exists, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio
from torch import nn
from tqdm import tqdm

from core.audio import SAMPLE_RATE
from core.files import atomic_path, write_json
from harness import batching, training
from harness.pretrain_config import DEFAULT_RECIPE, PRESETS, PretrainConfig  # noqa: F401 - re-exported
from tasks.audio import load_audio
from tasks.corpora.alignment import parse_alignment
from tasks.corpora.manifest import CorpusInfo, read_manifest
from upstreams.checkpoint import is_compact_checkpoint, load_compact, save_compact
from upstreams.cost import measure_cost, record_cost
from upstreams.model import SpeechEncoder

logger = logging.getLogger(__name__)
FRAME_STRIDE = 320
RECEPTIVE_FIELD = 400


class HubertHead(nn.Module):
    """Projects encoder outputs and scores them against one learned embedding per cluster.

    Returns logits ``[frames, clusters]`` = cosine similarity / temperature.
    """

    def __init__(self, embed_dim: int, final_dim: int, num_clusters: int, temperature: float) -> None:
        super().__init__()
        self.proj = nn.Linear(embed_dim, final_dim)
        self.codes = nn.Parameter(torch.randn(num_clusters, final_dim) * 0.1)
        self.temperature = temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.cosine_similarity(self.proj(x)[:, None, :], self.codes[None], dim=-1) / self.temperature


# ---------------------------------------------------------------------- targets
def mfcc_features(wav: np.ndarray) -> np.ndarray:
    """13 MFCCs with deltas and delta-deltas at the encoder's 20 ms frame rate: ``[frames, 39]``."""
    transform = _mfcc_transform()
    with torch.no_grad():
        mfcc = transform(torch.from_numpy(wav))  # [13, frames]
        deltas = torchaudio.functional.compute_deltas(mfcc)
        features = torch.cat([mfcc, deltas, torchaudio.functional.compute_deltas(deltas)], dim=0)
    return features.T.numpy()


_MFCC: list[torchaudio.transforms.MFCC] = []


def _mfcc_transform() -> torchaudio.transforms.MFCC:
    if not _MFCC:
        _MFCC.append(
            torchaudio.transforms.MFCC(
                sample_rate=SAMPLE_RATE,
                n_mfcc=13,
                melkwargs={"n_fft": RECEPTIVE_FIELD, "win_length": RECEPTIVE_FIELD, "hop_length": FRAME_STRIDE,
                           "n_mels": 40, "center": False},
            )  # fmt: skip
        )
    return _MFCC[0]


@torch.no_grad()
def layer_features(model: SpeechEncoder, wav: np.ndarray, layer: int, device: torch.device) -> np.ndarray:
    """Hidden state ``layer`` of ``model`` for one utterance: ``[frames, D]``."""
    hidden, _ = model(torch.from_numpy(wav)[None].to(device))
    return hidden[layer][0].float().cpu().numpy()


def make_targets(
    features: list[np.ndarray], num_clusters: int, sample_frames: int, seed: int, cmvn: bool = True
) -> list[np.ndarray]:
    """Fit mini-batch k-means on a sample of frames (standardised per dimension) and label every frame.

    With ``cmvn`` each utterance is first normalised to zero mean and unit variance per dimension,
    which removes most of the speaker's fixed spectral colouring: on SynthSpeech it lowers the
    clusters' mutual information with the speaker and raises it with the phone.
    """
    from sklearn.cluster import MiniBatchKMeans

    if cmvn:
        features = [(f - f.mean(0)) / (f.std(0) + 1e-5) for f in features]
    stacked = np.concatenate(features)
    mean, std = stacked.mean(0), stacked.std(0) + 1e-5
    rng = np.random.default_rng(seed)
    sample = stacked[rng.choice(len(stacked), size=min(sample_frames, len(stacked)), replace=False)]
    kmeans = MiniBatchKMeans(n_clusters=num_clusters, batch_size=10_000, n_init=3, max_iter=100, random_state=seed)
    kmeans.fit((sample - mean) / std)
    return [kmeans.predict((f - mean) / std).astype(np.int16) for f in features]


def target_quality(corpus: str | os.PathLike, wavs: list[str], labels: list[np.ndarray]) -> dict[str, float]:
    """Normalised mutual information of the cluster labels with phones and with speakers.

    Read on the ASR train utterances, whose manifest has phone alignments (empty when it has none).
    HuBERT picks its targets by how much they say about phones; this is the same measure.
    """
    from sklearn.metrics import normalized_mutual_info_score

    try:
        frame = read_manifest(corpus, "asr", "train")
    except ValueError:
        return {}
    if "phone_alignment" not in frame.columns:
        return {}
    index = {path: i for i, path in enumerate(wavs)}
    clusters, phones, speakers = [], [], []
    for path, cell, speaker in zip(frame["wav_path"], frame["phone_alignment"], frame["speaker"], strict=True):
        if path not in index or not isinstance(cell, str):
            continue
        frame_labels = labels[index[path]]
        for phone, start, end in parse_alignment(cell):
            span = frame_labels[int(start * 50) : int(end * 50)]
            clusters.extend(span.tolist())
            phones.extend([phone] * len(span))
            speakers.extend([speaker] * len(span))
    if not clusters:
        return {}
    return {
        "nmi_phone": round(float(normalized_mutual_info_score(phones, clusters)), 4),
        "nmi_speaker": round(float(normalized_mutual_info_score(speakers, clusters)), 4),
        "frames": len(clusters),
    }


def _save_targets(path: Path, labels: list[np.ndarray]) -> None:
    offsets = np.cumsum([0] + [len(x) for x in labels])
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, labels=np.concatenate(labels), offsets=offsets)


def _load_targets(path: Path) -> list[np.ndarray]:
    with np.load(path) as data:
        labels, offsets = data["labels"], data["offsets"]
    return [labels[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


# ---------------------------------------------------------------------- recipe
def pretrain(
    corpus: str | os.PathLike,
    out: str | os.PathLike,
    preset: str = DEFAULT_RECIPE,
    device: str | None = None,
    overrides: dict | None = None,
    command: str | None = None,
) -> Path:
    """Run (or resume) both iterations and write the teacher to ``OUT/teacher``; returns that path."""
    if preset not in PRESETS:
        raise ValueError(f"unknown pretraining preset {preset!r}; choose one of {', '.join(PRESETS)}")
    config = dataclasses.replace(PRESETS[preset], **(overrides or {}))
    out = Path(out)
    runtime = training.setup_runtime(device)
    started = time.perf_counter()
    _check_or_write_config(out, preset, config, corpus, runtime)

    wavs = training.training_wavs(corpus)
    audio = [load_audio(p).numpy() for p in tqdm(wavs, desc="loading audio", unit="file", disable=not runtime.is_main)]
    logger.info("pretraining on %d utterances (%.2f h) from %s", len(audio), sum(map(len, audio)) / SAMPLE_RATE / 3600, corpus)

    model = None
    for iteration in (1, 2):
        folder = out / f"iter{iteration}"
        targets_path = folder / "targets.npz"
        if runtime.is_main and not targets_path.is_file():
            if iteration == 1:
                features = [mfcc_features(a) for a in tqdm(audio, desc="MFCC", unit="file")]
            else:
                previous = load_compact(out / "iter1" / "model").to(runtime.device).eval()
                features = [
                    layer_features(previous, a, config.feature_layer, runtime.device)
                    for a in tqdm(audio, desc=f"layer {config.feature_layer} features", unit="file")
                ]
            labels = make_targets(
                features, config.clusters[iteration - 1], config.kmeans_frames, config.seed + iteration, config.target_cmvn
            )
            folder.mkdir(parents=True, exist_ok=True)
            _save_targets(targets_path, labels)
            quality = target_quality(corpus, wavs, labels)
            if quality:
                logger.info("iteration %d targets: %s", iteration, ", ".join(f"{k} {v}" for k, v in quality.items()))
                write_json(folder / "target_quality.json", quality)
        runtime.barrier()
        targets = _load_targets(targets_path)
        if not is_compact_checkpoint(folder / "model"):
            model = train_iteration(config, iteration, audio, targets, folder, runtime)
    teacher = out / "teacher"
    if runtime.is_main:
        final = load_compact(out / "iter2" / "model")
        save_compact(
            final,
            teacher,
            metadata={"source": "harness pretrain", "preset": preset, "corpus": str(corpus), "pretrain": dataclasses.asdict(config)},
            storage_dtype=None if config.storage_dtype == "float32" else getattr(torch, config.storage_dtype),
        )
        record_cost(teacher, measure_cost(final))
        write_model_card(teacher, out, preset, config, corpus, runtime, time.perf_counter() - started, command)
    del model
    return teacher


def initial_encoder(config: PretrainConfig, iteration: int, folder: Path) -> SpeechEncoder:
    """Random weights, or with ``warm_start`` the previous iteration's finished encoder (a sibling folder)."""
    model = SpeechEncoder(config.encoder_config())
    if iteration > 1 and config.warm_start:
        previous = folder.parent / f"iter{iteration - 1}" / "model"
        model.load_state_dict(load_compact(previous).state_dict())
        logger.info("iteration %d: starting from the iteration-%d encoder (%s)", iteration, iteration - 1, previous)
    return model


def train_iteration(
    config: PretrainConfig,
    iteration: int,
    audio: list[np.ndarray],
    targets: list[np.ndarray],
    folder: Path,
    runtime: training.Runtime,
) -> SpeechEncoder:
    """One HuBERT iteration, from random weights (or iteration 1's with ``warm_start``); resumes from ``folder/state.pt``."""
    training.seed_everything(config.seed + 1000 * iteration)
    model = initial_encoder(config, iteration, folder).to(runtime.device)
    head = HubertHead(config.embed_dim, config.final_dim, config.clusters[iteration - 1], config.temperature).to(runtime.device)
    parameters = [*model.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.98))
    total = config.steps[iteration - 1]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, training.lr_factor_fn(total, config.warmup_fraction))
    rng = np.random.default_rng([config.seed, iteration, runtime.rank])
    mask_generator = torch.Generator().manual_seed(config.seed * 7919 + iteration * 31 + runtime.rank)

    state_path = folder / "state.pt"
    step = 0
    state = training.load_state(state_path)
    if state is not None:
        model.load_state_dict(state["model"])
        head.load_state_dict(state["head"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        rng.bit_generator.state = json.loads(state["numpy_rng"])
        mask_generator.set_state(state["mask_rng"])
        step = int(state["step"])
        logger.info("iteration %d: resuming at step %d of %d", iteration, step, total)

    trained = model
    if runtime.world_size > 1:
        trained = torch.nn.parallel.DistributedDataParallel(model)
    lengths = [len(a) for a in audio]
    batches = batching.crop_batches(
        len(audio), lengths, config.batch_size, int(config.crop_seconds * SAMPLE_RATE), FRAME_STRIDE, rng
    )
    log = open(folder / "log.jsonl", "a", encoding="utf-8") if runtime.is_main else None  # noqa: SIM115
    progress = tqdm(total=total, initial=step, desc=f"HuBERT iteration {iteration}", disable=not runtime.is_main)
    model.train()
    head.train()
    while step < total:
        batch = next(batches)
        wav = torch.from_numpy(np.stack([audio[i][s : s + n] for i, s, n in batch])).to(runtime.device)
        frames = training.frames_for(wav.shape[1], RECEPTIVE_FIELD, FRAME_STRIDE)
        labels = torch.from_numpy(
            np.stack([targets[i][s // FRAME_STRIDE : s // FRAME_STRIDE + frames] for i, s, _ in batch]).astype(np.int64)
        ).to(runtime.device)
        mask = training.span_mask(len(batch), frames, config.mask_prob, config.mask_span, mask_generator, runtime.device)
        with runtime.autocast():
            hidden, _ = trained(wav, frame_mask=mask)
            last = model.last_hidden_state(hidden)
            logits = head(last[mask])
            unmasked_logits = head(last[~mask]) if config.unmasked_weight > 0 else None
        loss = F.cross_entropy(logits.float(), labels[mask])  # the masked-prediction loss, logged as "loss"
        total_loss = loss
        unmasked_loss = None
        if unmasked_logits is not None and unmasked_logits.shape[0] > 0:
            unmasked_loss = F.cross_entropy(unmasked_logits.float(), labels[~mask])
            total_loss = loss + config.unmasked_weight * unmasked_loss
        optimizer.zero_grad(set_to_none=True)
        total_loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip)
        optimizer.step()
        scheduler.step()
        step += 1
        accuracy = (logits.argmax(-1) == labels[mask]).float().mean().item()
        progress.update(1)
        progress.set_postfix(loss=f"{loss.item():.3f}", acc=f"{accuracy:.3f}")
        if log is not None:
            entry = {"step": step, "loss": round(loss.item(), 5), "masked_accuracy": round(accuracy, 5),
                     "lr": scheduler.get_last_lr()[0], "grad_norm": round(float(grad_norm), 4), "time": time.time()}  # fmt: skip
            if unmasked_loss is not None:
                entry["unmasked_loss"] = round(unmasked_loss.item(), 5)
            log.write(json.dumps(entry) + "\n")
            log.flush()
        if runtime.is_main and (step % config.save_every == 0 or step == total):
            training.save_state(
                state_path,
                {"step": step, "model": model.state_dict(), "head": head.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "numpy_rng": json.dumps(rng.bit_generator.state),
                 "mask_rng": mask_generator.get_state()},
            )  # fmt: skip
    progress.close()
    if log is not None:
        log.close()
    if runtime.is_main:
        save_compact(model.eval().cpu(), folder / "model", metadata={"source": "harness pretrain", "iteration": iteration})
    runtime.barrier()
    return model


def _check_or_write_config(out: Path, preset: str, config: PretrainConfig, corpus, runtime: training.Runtime) -> None:
    wanted = {"preset": preset, "corpus_fingerprint": CorpusInfo.read(corpus).fingerprint, **dataclasses.asdict(config)}
    path = out / "pretrain_config.json"
    if path.is_file():
        existing = json.loads(path.read_text(encoding="utf-8"))
        if existing != wanted:
            changed = sorted(k for k in wanted if existing.get(k) != wanted[k])
            raise ValueError(f"{out} holds a pretraining run with other settings ({', '.join(changed)}); use another --out")
    elif runtime.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_json(path, wanted)


def _loss_summary(log_path: Path) -> dict:
    by_step = {}  # a resumed run logs the steps after its last saved state twice; the later ones count
    for line in log_path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            entry = json.loads(line)
            by_step[entry["step"]] = entry
    entries = [by_step[step] for step in sorted(by_step)]
    if not entries:
        return {}
    tenth = max(1, len(entries) // 10)
    window = lambda part: float(np.mean([e["loss"] for e in part]))  # noqa: E731
    summary = {
        "steps": entries[-1]["step"],
        "loss_first_10pct": round(window(entries[:tenth]), 4),
        "loss_last_10pct": round(window(entries[-tenth:]), 4),
        "masked_accuracy_last_10pct": round(float(np.mean([e["masked_accuracy"] for e in entries[-tenth:]])), 4),
        "loss_curve": [round(window(entries[i : i + tenth]), 4) for i in range(0, len(entries), tenth)],
        "wall_seconds": round(entries[-1]["time"] - entries[0]["time"], 1),
    }
    unmasked = [e["unmasked_loss"] for e in entries if "unmasked_loss" in e]
    if unmasked:
        summary["unmasked_loss_last_10pct"] = round(float(np.mean(unmasked[-tenth:])), 4)
    return summary


def write_model_card(
    teacher: Path, out: Path, preset: str, config: PretrainConfig, corpus, runtime, seconds: float, command: str | None
) -> None:
    """MODEL_CARD.md beside the teacher's weights: command, corpus, steps, loss curves, time, device."""
    info = CorpusInfo.read(corpus)
    summaries = {i: _loss_summary(out / f"iter{i}" / "log.jsonl") for i in (1, 2)}
    for i, summary in summaries.items():
        quality_path = out / f"iter{i}" / "target_quality.json"
        if summary and quality_path.is_file():
            summary["target_quality"] = json.loads(quality_path.read_text(encoding="utf-8"))
    model = load_compact(teacher)
    device = torch.cuda.get_device_name(runtime.device) if runtime.device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    training_minutes = sum(s.get("wall_seconds", 0.0) for s in summaries.values()) / 60
    write_json(teacher / "pretrain_summary.json", {"iterations": summaries, "corpus": dataclasses.asdict(info)})
    lines = [
        "# SynthSpeech HuBERT teacher" if info.name == "synthspeech" else "# HuBERT teacher",
        "",
        f"A {model.num_params() / 1e6:.2f} M-parameter HuBERT-architecture encoder ({config.layers} layers, width "
        f"{config.embed_dim}, {config.heads} heads, FFN {config.ffn_dim}, {config.conv_channels}-channel conv extractor), "
        f"pretrained with HuBERT's masked prediction objective (preset `{preset}`)"
        + ("." if config.storage_dtype == "float32" else f"; its weights are stored in {config.storage_dtype} and load as float32."),
        "",
        "## Reproduce",
        "",
        "```bash",
        command or f"harness pretrain --corpus {corpus} --preset {preset} --out {out}",
        "```",
        "",
        f"- corpus: {info.source}, params {json.dumps(info.params)}, {info.hours:.2f} h, fingerprint `{info.fingerprint[:16]}`",
        f"- targets: iteration 1 k-means (k={config.clusters[0]}) of MFCC+deltas; iteration 2 k-means "
        f"(k={config.clusters[1]}) of hidden state {config.feature_layer} of the iteration-1 model; "
        f"{'per-utterance' if config.target_cmvn else 'no'} mean and variance normalisation before k-means; "
        f"iteration 2 starts {'from the iteration-1 weights' if config.warm_start else 'from random weights'}",
        "- loss: cross-entropy on masked frames"
        + (f" + {config.unmasked_weight} x cross-entropy on unmasked frames" if config.unmasked_weight else " only"),
        f"- optimisation: AdamW lr {config.lr}, {config.warmup_fraction:.0%} warm-up then linear decay, batch "
        f"{config.batch_size} x {config.crop_seconds} s crops, span masking p={config.mask_prob} span={config.mask_span}",
        f"- device: {device}; wall time of the training steps {training_minutes:.1f} min (both iterations, from "
        f"their step logs); this invocation {seconds / 60:.1f} min",
        "",
        "## Training curves",
        "",
        "| iteration | steps | masked loss (first 10 %) | masked loss (last 10 %) | masked accuracy (last 10 %) "
        "| unmasked loss (last 10 %) | wall time | target NMI with phones / speakers |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i, s in summaries.items():
        if s:
            quality = s.get("target_quality", {})
            nmi = f"{quality['nmi_phone']} / {quality['nmi_speaker']}" if quality else "n/a"
            lines.append(
                f"| {i} | {s['steps']} | {s['loss_first_10pct']} | {s['loss_last_10pct']} | "
                f"{s['masked_accuracy_last_10pct']} | {s.get('unmasked_loss_last_10pct', 'n/a')} | "
                f"{s['wall_seconds'] / 60:.1f} min | {nmi} |"
            )
    for i, s in summaries.items():
        if s:
            lines += ["", f"Iteration {i} masked loss by tenths of training: {', '.join(map(str, s['loss_curve']))}"]
    lines.append("")
    with atomic_path(teacher / "MODEL_CARD.md") as tmp:
        tmp.write_text("\n".join(lines), encoding="utf-8")


def command_line() -> str:
    return "harness " + " ".join(sys.argv[1:])

