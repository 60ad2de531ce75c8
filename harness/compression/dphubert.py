"""DPHuBERT (Peng et al., Interspeech 2023): joint distillation and structured pruning to a target sparsity.

Recipe (``compress_dphubert``), one flat file in the torchtune manner::

    setup    load the teacher; the student is a copy of it (dropout off); identity-initialised
             D->D projections for the distilled hidden states (0 and every L/3-th: 0,4,8,12 for
             12 layers, 0,2,4,6 for 6); HardConcrete gates on conv channels, heads and FFN units
    stage 1  distil + prune: loss = L1 - cosine (mean over the distilled states, student states
             through the projections) + lambda1 (s_hat - t) + lambda2 (s_hat - t)^2, with s_hat the
             expected sparsity from the differentiable parameter count, t rising linearly to the
             target, and lambda1, lambda2 trained by gradient ascent (learning rate -reg_lr)
    prune    deterministic gates (eval rule), projected onto the exact parameter budget, folded into
             the weights (``SpeechEncoder.prune``); the compact model equals the masked one
    stage 2  distil the compact model (same loss, no regulariser)
    save     compact checkpoint in OUT (loads as s3prl ``pruned_{family}``)

Hitting the target on short runs: the Lagrangian brings s_hat close to the target, and the eval
rule keeps ``round(n - L0)`` units per gate, so the deterministic model is near the expected count;
on short runs it can still be some percent off. ``EncoderGates.project_to_budget`` then removes the
lowest-scoring kept units while over budget and gives back the best pruned units that still fit, so
the compact model lands within one FFN unit (``2 D + 1`` parameters) under ``(1 - s) x teacher``.

Work files in ``OUT/dphubert/``: ``run_config.json`` (a rerun must match it), ``log.jsonl`` (one
line per step: distillation loss, expected and target sparsity, lambda1, lambda2, learning rate),
``stage{1,2}.pt`` (resume points, saved every ``save_every`` steps and at the end of each stage,
removed when the run is complete), ``pruned/`` (the compact model between the stages) and
``summary.json``. A killed run resumes from the last state with the same batches and gate noise.

Speed: bf16 autocast on GPUs, ``scaled_dot_product_attention`` in the encoder, length-bucketed
batches cropped to their shortest item, DDP under ``torchrun`` (NCCL on GPUs, gloo on the CPU).

Run::

    harness compress --method dphubert --sparsity 0.75 --corpus synth --preset demo --out runs/dphubert-0.75
    torchrun --nproc_per_node 4 -m harness.cli compress --method dphubert --teacher torchaudio:HUBERT_BASE \
        --corpus librispeech:/data/LibriSpeech --preset paper --out runs/dphubert-base-0.75

Differences from the public code, on purpose: each distilled state has its own projection (the
public run script shares one between states 4, 8 and 12); the budget projection after stage 1 is
ours; utterances longer than ``crop_seconds`` are cropped rather than skipped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from core.audio import SAMPLE_RATE
from core.files import atomic_open, write_json
from harness import training
from harness.compression.dphubert_options import (  # noqa: F401 - re-exported: the recipe's settings
    PRESETS,
    UNIT_KINDS,
    DPHuBERTConfig,
    add_arguments,
    resolve_config,
)
from harness.compression.hardconcrete import EncoderGates
from upstreams.checkpoint import is_compact_checkpoint, load_compact, save_compact
from upstreams.model import SpeechEncoder

logger = logging.getLogger(__name__)
WORK_DIR = "dphubert"


# ---------------------------------------------------------------------- model pieces
class DistillStudent(nn.Module):
    """The student encoder, its gates (stage 1 only) and the distillation projections.

    One module, so that DDP synchronises every trained parameter. ``forward(waveforms)`` sets gate
    masks (samples in training mode) and returns ``(projected states, expected parameter count or
    None)``, the states ``[batch, frame, D]`` at ``layers``.
    """

    def __init__(self, encoder: SpeechEncoder, layers: list[int], gates: EncoderGates | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.layers = list(layers)
        self.gates = gates
        dim = encoder.config.embed_dim
        self.projections = nn.ModuleList(nn.Linear(dim, dim) for _ in layers)
        with torch.no_grad():
            for projection in self.projections:
                projection.weight.copy_(torch.eye(dim))
                projection.bias.zero_()
        for parameter in encoder.parameters():  # unused in distillation: keep DDP's reduction complete
            if parameter.numel() == 0:
                parameter.requires_grad_(False)
        if encoder.mask_embedding is not None:
            encoder.mask_embedding.requires_grad_(False)

    def forward(self, waveforms: Tensor) -> tuple[list[Tensor], Tensor | None]:
        expected = None
        if self.gates is not None:
            self.encoder.set_masks(self.gates.masks())
            expected = self.gates.expected_num_params()
        hidden, _ = self.encoder(waveforms)
        return [projection(hidden[i]) for i, projection in zip(self.layers, self.projections, strict=True)], expected


def pruned_structures(config: DPHuBERTConfig, teacher_config) -> tuple[str, ...]:
    """``--prune`` if given; else the paper's ``conv, heads, ffn_units``, without conv channels when the
    extractor has a LayerNorm over channels (Large models): removing channels there changes that
    LayerNorm's statistics, so the compact model would no longer equal the masked one."""
    if config.prune:
        return tuple(config.prune)
    if teacher_config.extractor_norm == "layer":
        logger.info("layer-norm conv extractor: conv channels are not pruned (pass --prune conv,heads,ffn_units to force)")
        return ("heads", "ffn_units")
    return UNIT_KINDS


def default_distill_layers(num_layers: int) -> list[int]:
    """0 and every L/3-th hidden state: ``[0, 4, 8, 12]`` for 12 layers, ``[0, 2, 4, 6]`` for 6."""
    return sorted({round(i * num_layers / 3) for i in range(4)})


def distill_loss(student: list[Tensor], teacher: list[Tensor]) -> tuple[Tensor, float, float]:
    """Layer-to-layer loss: per state, mean L1 minus mean cosine similarity over frames; averaged over
    states. Returns the loss and the mean L1 and cosine (floats, for the log)."""
    l1 = torch.stack([F.l1_loss(s.float(), t.float()) for s, t in zip(student, teacher, strict=True)])
    cosine = torch.stack(
        [F.cosine_similarity(s.float(), t.float(), dim=-1).mean() for s, t in zip(student, teacher, strict=True)]
    )
    return (l1 - cosine).mean(), float(l1.detach().mean()), float(cosine.detach().mean())


def student_from_teacher(teacher: SpeechEncoder, dropout: float) -> SpeechEncoder:
    """A trainable copy of the teacher with the given dropout and no layer drop."""
    config = teacher.config.replace(
        dropout=dropout, attention_dropout=dropout, activation_dropout=dropout, projection_dropout=dropout, layer_drop=0.0
    )
    student = SpeechEncoder(config, initialize=False)
    student.load_state_dict(teacher.state_dict())
    return student


# ---------------------------------------------------------------------- audio
class CorpusAudio:
    """Training utterances of a prepared corpus, read crop by crop (no need to hold the corpus in memory)."""

    def __init__(self, corpus: str | os.PathLike, min_samples: int) -> None:
        paths = training.training_wavs(corpus)
        lengths = [sf.info(p).frames for p in tqdm(paths, desc="audio lengths", unit="file", leave=False)]
        kept = [(p, n) for p, n in zip(paths, lengths, strict=True) if n >= min_samples]
        if not kept:
            raise ValueError(f"{corpus}: no training utterance has {min_samples} samples or more")
        self.paths = [p for p, _ in kept]
        self.lengths = [n for _, n in kept]
        logger.info("%d training utterances, %.2f h (%d shorter than %d samples skipped)", len(kept),
                    sum(self.lengths) / SAMPLE_RATE / 3600, len(paths) - len(kept), min_samples)  # fmt: skip

    def batch(self, crops: list[tuple[int, int, int]]) -> Tensor:
        """``[batch, samples]`` float32 from ``(item, start, num_samples)`` triples (equal lengths)."""
        rows = []
        for item, start, size in crops:
            audio, rate = sf.read(self.paths[item], start=start, frames=size, dtype="float32", always_2d=True)
            if rate != SAMPLE_RATE or len(audio) != size:
                raise ValueError(f"{self.paths[item]}: expected {size} samples at 16 kHz, got {len(audio)} at {rate} Hz")
            rows.append(audio.mean(axis=1))
        return torch.from_numpy(np.stack(rows))


# ---------------------------------------------------------------------- training
@dataclass
class Stage:
    """What differs between the two stages."""

    number: int
    steps: int
    lr: float
    warmup: float
    prune: bool


def build_optimizer(
    student: DistillStudent, lambdas: nn.Parameter | None, stage: Stage, config: DPHuBERTConfig
) -> torch.optim.AdamW:
    """AdamW with the main weights at the stage's lr; in stage 1 also log_alpha at ``reg_lr`` and the
    multipliers at ``-reg_lr`` (gradient ascent). All groups follow the same warm-up/decay schedule."""
    gate_ids = {id(p) for p in student.gates.parameters()} if student.gates is not None else set()
    main = [p for p in student.parameters() if p.requires_grad and id(p) not in gate_ids]
    groups = [{"params": main, "lr": stage.lr, "weight_decay": config.weight_decay, "name": "main"}]
    if stage.prune:
        groups.append({"params": list(student.gates.parameters()), "lr": config.reg_lr, "weight_decay": 0.0, "name": "log_alpha"})
        groups.append({"params": [lambdas], "lr": -config.reg_lr, "weight_decay": 0.0, "name": "lambdas"})
    return torch.optim.AdamW(groups)


def distill_step(
    trained: nn.Module,
    student: DistillStudent,
    teacher: SpeechEncoder,
    waveforms: Tensor,
    optimizer: torch.optim.Optimizer,
    lambdas: nn.Parameter | None,
    target: float | None,
    teacher_params: int,
    grad_clip: float,
    runtime: training.Runtime,
) -> dict:
    """One optimisation step on ``waveforms`` ``[batch, time]``; returns the log entry.

    ``trained`` is ``student`` or its DDP wrapper. With ``lambdas`` (stage 1) the loss adds
    ``lambda1 (s_hat - t) + lambda2 (s_hat - t)^2`` for target sparsity ``target``. Gradients of
    the weights and gates are clipped to ``grad_clip`` (the multipliers are not clipped).
    """
    with torch.no_grad(), runtime.autocast():
        teacher_hidden, _ = teacher(waveforms)
    with runtime.autocast():
        predicted, expected = trained(waveforms)
    loss_distill, l1, cosine = distill_loss(predicted, [teacher_hidden[i] for i in student.layers])
    loss = loss_distill
    entry = {"distill": round(loss_distill.item(), 5), "l1": round(l1, 5), "cosine": round(cosine, 5)}
    if lambdas is not None:
        expected_sparsity = 1.0 - expected.float() / teacher_params
        gap = expected_sparsity - target
        loss = loss + lambdas[0] * gap + lambdas[1] * gap * gap
        entry.update(expected_sparsity=round(float(expected_sparsity.detach()), 5), target_sparsity=round(target, 5),
                     lambda1=round(float(lambdas[0].detach()), 5), lambda2=round(float(lambdas[1].detach()), 5))  # fmt: skip
    lr = optimizer.param_groups[0]["lr"]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    clipped = [p for group in optimizer.param_groups if group.get("name") != "lambdas" for p in group["params"]]
    grad_norm = torch.nn.utils.clip_grad_norm_(clipped, grad_clip)
    optimizer.step()
    entry.update(lr=lr, grad_norm=round(float(grad_norm), 4), seconds=round(waveforms.shape[1] / SAMPLE_RATE, 3),
                 batch=waveforms.shape[0])  # fmt: skip
    return entry


def train_stage(
    stage: Stage,
    student: DistillStudent,
    teacher: SpeechEncoder,
    audio: CorpusAudio,
    config: DPHuBERTConfig,
    runtime: training.Runtime,
    work: Path,
    teacher_params: int,
    generator: torch.Generator,
) -> list[dict]:
    """Run (or resume) one stage; returns the log entries of this invocation."""
    lambdas = nn.Parameter(torch.zeros(2, device=runtime.device)) if stage.prune else None
    optimizer = build_optimizer(student, lambdas, stage, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, training.lr_factor_fn(stage.steps, stage.warmup))
    state_path = work / f"stage{stage.number}.pt"
    step = 0
    state = training.load_state(state_path, map_location=runtime.device)
    if state is not None:
        student.load_state_dict(state["student"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"].cpu())
        if lambdas is not None:
            with torch.no_grad():
                lambdas.copy_(state["lambdas"])
        step = int(state["step"])
        logger.info("stage %d: resuming at step %d of %d", stage.number, step, stage.steps)
    if runtime.is_main:
        _drop_log_entries_after(work / "log.jsonl", stage.number, step)

    trained: nn.Module = student
    if runtime.world_size > 1:
        trained = nn.parallel.DistributedDataParallel(student, device_ids=[runtime.device] if runtime.device.type == "cuda" else None)
    batches = training.bucketed_batches(
        audio.lengths, int(config.batch_seconds * SAMPLE_RATE), int(config.crop_seconds * SAMPLE_RATE),
        teacher.config.downsample_rate, config.seed + 7919 * stage.number, runtime.rank, runtime.world_size, start=step,
    )  # fmt: skip
    sparsity_warmup = max(1, round(config.sparsity_warmup * stage.steps))
    log = open(work / "log.jsonl", "a", encoding="utf-8") if runtime.is_main else None  # noqa: SIM115
    progress = tqdm(total=stage.steps, initial=step, desc=f"DPHuBERT stage {stage.number}", disable=not runtime.is_main)
    entries = []
    student.train()
    while step < stage.steps:
        waveforms = audio.batch(next(batches)).to(runtime.device, non_blocking=True)
        target = config.sparsity * min(1.0, step / sparsity_warmup) if stage.prune else None
        entry = distill_step(trained, student, teacher, waveforms, optimizer, lambdas, target, teacher_params,
                             config.grad_clip, runtime)  # fmt: skip
        scheduler.step()
        step += 1
        entry = {"stage": stage.number, "step": step, **entry, "time": round(time.time(), 3)}
        entries.append(entry)
        progress.update(1)
        progress.set_postfix({k: entry[k] for k in ("distill", "expected_sparsity", "target_sparsity") if k in entry})
        if log is not None:
            log.write(json.dumps(entry) + "\n")
            log.flush()
        if runtime.is_main and (step % config.save_every == 0 or step == stage.steps):
            snapshot = {"step": step, "student": student.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "generator": generator.get_state()}  # fmt: skip
            if lambdas is not None:
                snapshot["lambdas"] = lambdas.detach()
            training.save_state(state_path, snapshot)
    progress.close()
    if log is not None:
        log.close()
    runtime.barrier()
    return entries


@torch.no_grad()
def final_masks(gates: EncoderGates, budget: int, config: DPHuBERTConfig) -> tuple[dict[str, Tensor], dict]:
    """The eval-rule masks, projected onto ``budget`` when further off than ``budget_tolerance``."""
    masks = gates.deterministic_masks()
    params = gates.num_params(masks)
    summary: dict = {"params_eval_rule": params}
    if abs(params - budget) > config.budget_tolerance * budget:
        masks, projection = gates.project_to_budget(masks, budget)
        summary["projection"] = projection
        logger.info("eval-rule model has %d parameters, budget %d: projected to %d (%d units removed, %d given back)",
                    params, budget, projection["params_after"], projection["units_removed"], projection["units_added"])  # fmt: skip
    return masks, summary


@torch.no_grad()
def prune_student(
    student: DistillStudent, budget: int, config: DPHuBERTConfig, probe: Tensor
) -> tuple[SpeechEncoder, dict]:
    """Fold :func:`final_masks` into a compact encoder; ``probe`` ``[batch, time]`` checks compact == masked."""
    gates, encoder = student.gates, student.encoder
    masks, summary = final_masks(gates, budget, config)
    encoder.eval()
    encoder.set_masks(masks)
    compact = encoder.prune()
    masked_states, _ = encoder(probe)
    encoder.clear_masks()
    compact.eval()
    compact_states, _ = compact(probe)
    summary["compact_vs_masked_max_abs_diff"] = max(
        float((a - b).abs().max()) for a, b in zip(masked_states, compact_states, strict=True)
    )
    if summary["compact_vs_masked_max_abs_diff"] > 1e-4:
        logger.warning("the compact model differs from the masked one by up to %.3g (conv channels of a layer-norm "
                       "extractor were pruned); stage 2 distils it back", summary["compact_vs_masked_max_abs_diff"])  # fmt: skip
    if compact.num_params() != gates.num_params(masks):
        raise RuntimeError(f"pruned model has {compact.num_params()} parameters, the count said {gates.num_params(masks)}")
    summary["kept"] = {
        "conv_channels": compact.config.conv_channels,
        "heads": compact.config.num_heads,
        "ffn_dims": compact.config.ffn_dims,
    }
    return compact, summary


# ---------------------------------------------------------------------- the recipe
def compress_dphubert(
    teacher: str,
    out: str | os.PathLike,
    *,
    corpus: str | os.PathLike,
    preset: str = "demo",
    device: str | None = None,
    sparsity: float = DPHuBERTConfig.sparsity,
    measure_cost: bool = True,
    **options,
) -> Path:
    """Distil and prune ``teacher`` to ``sparsity``; write the compact checkpoint to ``out`` and return it.

    ``options`` override fields of the preset's :class:`DPHuBERTConfig` (``stage1_steps``, ``seed``, ...).
    Rerunning with the same arguments resumes a killed run, or returns at once when it is complete.
    """
    from tasks.corpora.manifest import CorpusInfo
    from upstreams import load_upstream

    config = resolve_config(preset, sparsity, options)
    out = Path(out)
    work = out / WORK_DIR
    runtime = training.setup_runtime(device)
    if config.threads is not None and runtime.device.type == "cpu":
        torch.set_num_threads(config.threads)
    run_settings = {"teacher": str(teacher), "corpus_fingerprint": CorpusInfo.read(corpus).fingerprint, "preset": preset,
                    "world_size": runtime.world_size, **dataclasses.asdict(config)}  # fmt: skip
    run_settings.pop("threads")
    if _check_or_write_settings(work, run_settings, runtime) and (work / "summary.json").is_file() and is_compact_checkpoint(out):
        logger.info("%s is complete; nothing to do", out)
        if runtime.is_main:
            _remove_resume_files(work)
        return out
    started = time.perf_counter()
    training.seed_everything(config.seed)
    generator = torch.Generator().manual_seed(config.seed)  # gate init and noise: the same on every process

    teacher_model = load_upstream(teacher).to(runtime.device).eval()
    teacher_model.requires_grad_(False)
    teacher_params = teacher_model.num_params()
    budget = round((1.0 - config.sparsity) * teacher_params)
    layers = config.distill_layers or default_distill_layers(teacher_model.config.num_layers)
    if max(layers) > teacher_model.config.num_layers or min(layers) < 0:
        raise ValueError(f"--distill-layers {layers}: the teacher has hidden states 0..{teacher_model.config.num_layers}")
    audio = CorpusAudio(corpus, min_samples=max(teacher_model.config.receptive_field, round(config.min_seconds * SAMPLE_RATE)))
    probe_samples = min(4 * SAMPLE_RATE, *audio.lengths[:4])
    probe = audio.batch([(i, 0, probe_samples) for i in range(min(4, len(audio.lengths)))]).to(runtime.device)
    logger.info("DPHuBERT: teacher %s (%d parameters), target sparsity %.3f (%d parameters), distilling states %s",
                teacher_model.config.describe(), teacher_params, config.sparsity, budget, layers)  # fmt: skip

    # ---- stage 1: distil + prune
    pruned_dir = work / "pruned"
    if not is_compact_checkpoint(pruned_dir):
        gates = EncoderGates(teacher_model.config, pruned_structures(config, teacher_model.config), config.prune_blocks,
                             generator=generator)  # fmt: skip
        _check_reachable(gates, budget, config.sparsity)
        student = DistillStudent(student_from_teacher(teacher_model, config.student_dropout), layers, gates)
        student.to(runtime.device)
        stage1 = Stage(1, config.stage1_steps, config.stage1_lr, config.stage1_warmup, prune=True)
        train_stage(stage1, student, teacher_model, audio, config, runtime, work, teacher_params, generator)
        if runtime.is_main:
            compact, prune_summary = prune_student(student, budget, config, probe)
            training.save_state(work / "projections.pt", {"projections": student.projections.state_dict(), "summary": json.dumps(prune_summary)})
            save_compact(compact.cpu(), pruned_dir, metadata={"dphubert_stage": 1})
        runtime.barrier()
        del student
    stage1_result = training.load_state(work / "projections.pt", map_location=runtime.device)
    prune_summary = json.loads(stage1_result["summary"])

    # ---- stage 2: distil the compact model
    compact = load_compact(pruned_dir, device=runtime.device)
    student = DistillStudent(compact, layers)
    student.projections.load_state_dict(stage1_result["projections"])
    student.to(runtime.device)
    if config.stage2_steps:
        stage2 = Stage(2, config.stage2_steps, config.stage2_lr, config.stage2_warmup, prune=False)
        train_stage(stage2, student, teacher_model, audio, config, runtime, work, teacher_params, generator)

    # ---- save
    if runtime.is_main:
        final = student.encoder.eval()
        params = final.num_params()
        summary = {
            "method": "dphubert", "teacher": str(teacher), "sparsity": config.sparsity, "dir": str(out),
            "achieved_sparsity": round(1.0 - params / teacher_params, 5), "params": params, "teacher_params": teacher_params,
            "budget": budget, "preset": preset, "stage1_steps": config.stage1_steps, "stage2_steps": config.stage2_steps,
            "distill_layers": layers, "world_size": runtime.world_size, **prune_summary,
        }  # fmt: skip
        last = [json.loads(line) for line in (work / "log.jsonl").read_text(encoding="utf-8").splitlines()[-10:]]
        summary["final_distill_loss"] = round(float(np.mean([e["distill"] for e in last])), 5)
        save_compact(final, out, metadata={"source": "harness compress --method dphubert", "compression": summary})
        if measure_cost:
            _record_cost(final, out)
        write_json(work / "summary.json", {**summary, "config": dataclasses.asdict(config),
                                          "wall_seconds_this_invocation": round(time.perf_counter() - started, 1)})  # fmt: skip
        _remove_resume_files(work)
        logger.info("DPHuBERT: %d -> %d parameters (sparsity %.4f, target %.4f) in %.1f min; saved to %s", teacher_params,
                    params, summary["achieved_sparsity"], config.sparsity, (time.perf_counter() - started) / 60, out)  # fmt: skip
    runtime.barrier()
    return out


def _record_cost(model: SpeechEncoder, out: Path) -> None:
    """``cost.json`` beside the checkpoint; a failed measurement is logged, never fatal (the model is saved)."""
    from upstreams.cost import measure_cost, record_cost

    try:
        record_cost(out, measure_cost(model))
    except Exception as err:  # noqa: BLE001 - the checkpoint is complete without its cost record
        logger.warning("%s: could not measure the cost (%s: %s); saved without cost.json", out, type(err).__name__, err)


def _drop_log_entries_after(path: Path, stage: int, step: int) -> None:
    """Forget log lines of steps that a killed run did after its last resume point (they are redone)."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if line.strip() and _stage_step(line) <= (stage, step)]
    if len(kept) != len(lines):
        with atomic_open(path) as f:
            f.write("".join(line + "\n" for line in kept))


def _stage_step(line: str) -> tuple[int, int]:
    entry = json.loads(line)
    return int(entry["stage"]), int(entry["step"])


def _remove_resume_files(work: Path) -> None:
    """Drop the resume points of a finished run (they would only weigh on checkpoint hashing)."""
    for name in ("stage1.pt", "stage2.pt", "projections.pt"):
        (work / name).unlink(missing_ok=True)
    shutil.rmtree(work / "pruned", ignore_errors=True)


def _check_reachable(gates: EncoderGates, budget: int, sparsity: float) -> None:
    """Refuse a target that pruning every gated unit (one channel left per conv layer) cannot reach."""
    smallest = {name: torch.zeros(gates.gate(name).n) for name in gates.names}
    for name in gates.names:
        if name.startswith("conv."):
            smallest[name][0] = 1.0
    floor = gates.num_params(smallest)
    if floor > budget:
        raise ValueError(
            f"--sparsity {sparsity}: the parts DPHuBERT does not prune alone have {floor} parameters, more than the "
            f"budget of {budget}; choose a lower sparsity (or --prune-blocks)"
        )


def _check_or_write_settings(work: Path, settings: dict, runtime: training.Runtime) -> bool:
    """True if ``work`` already holds a run with these settings; raises if it holds another."""
    path = work / "run_config.json"
    if path.is_file():
        existing = json.loads(path.read_text(encoding="utf-8"))
        if existing != json.loads(json.dumps(settings)):
            changed = sorted(k for k in settings if existing.get(k) != json.loads(json.dumps(settings)).get(k))
            raise ValueError(f"{work.parent} holds a DPHuBERT run with other settings ({', '.join(changed)}); use another --out")
        return True
    if runtime.is_main:
        work.mkdir(parents=True, exist_ok=True)
        write_json(path, settings)
    runtime.barrier()
    return False

