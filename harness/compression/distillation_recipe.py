"""What the distillation recipes share (DPHuBERT, the fixed-student baseline ``distill`` and the
convexity-guided hybrid): the student with its projections, the layer-to-layer loss, training
audio, the two-stage training loop with resume points, and the run folder's bookkeeping.

A recipe starts a :class:`RecipeRun` (:func:`start_run`: the run's settings are checked against
``OUT/<work>/run_config.json``, seeds are set), trains with :func:`train_stage` (one call per stage;
``stage{N}.pt`` resume points every ``save_every`` steps and at the end of the stage, ``log.jsonl``
one line per step) and ends with :func:`finish_run` (the compact checkpoint with its compression
metadata, ``cost.json``, ``summary.json``; the resume points are removed). A killed run resumes from
its last resume point with the same batches and gate noise.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from core.audio import SAMPLE_RATE
from core.files import atomic_open, write_json
from harness import batching, training
from harness.compression.dphubert.hardconcrete import EncoderGates
from harness.compression.dphubert.options import DPHuBERTConfig
from tasks.audio import audio_num_samples, load_audio_window
from upstreams.checkpoint import is_compact_checkpoint, save_compact
from upstreams.cost import try_record_cost
from upstreams.model import SpeechEncoder

logger = logging.getLogger(__name__)

#: ``(student states, teacher states) -> (loss, mean L1, mean cosine)``.
LossFunction = Callable[[list[Tensor], list[Tensor]], tuple[Tensor, float, float]]


# ---------------------------------------------------------------------- model pieces
def distill_loss(student: list[Tensor], teacher: list[Tensor]) -> tuple[Tensor, float, float]:
    """Layer-to-layer loss: per state, mean L1 minus mean cosine similarity over frames; averaged over
    states. Returns the loss and the mean L1 and cosine (floats, for the log)."""
    l1 = torch.stack([F.l1_loss(s.float(), t.float()) for s, t in zip(student, teacher, strict=True)])
    cosine = torch.stack(
        [F.cosine_similarity(s.float(), t.float(), dim=-1).mean() for s, t in zip(student, teacher, strict=True)]
    )
    return (l1 - cosine).mean(), float(l1.detach().mean()), float(cosine.detach().mean())


class DistillStudent(nn.Module):
    """The student encoder, its gates (pruning stages only) and the distillation projections.

    One module, so that DDP synchronises every trained parameter. ``forward(waveforms)`` sets gate
    masks (samples in training mode) and returns ``(projected states, expected parameter count or
    None)``: one ``[batch, frame, D]`` tensor per entry of ``layers``, the student's hidden state
    ``sources[j]`` through projection ``j`` (identity-initialised), to be compared with the
    teacher's state ``layers[j]`` by ``loss``.

    Args:
        encoder: the student.
        layers: the teacher's hidden states to distil.
        gates: HardConcrete gates on the encoder, or None.
        sources: the student's state read for each of ``layers`` (default: the same indices, as in
            DPHuBERT; DistilHuBERT's prediction heads all read the last state).
        loss: :data:`LossFunction` (default: DPHuBERT's :func:`distill_loss`).
    """

    def __init__(
        self,
        encoder: SpeechEncoder,
        layers: list[int],
        gates: EncoderGates | None = None,
        sources: list[int] | None = None,
        loss: LossFunction = distill_loss,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.layers = list(layers)
        self.sources = list(layers if sources is None else sources)
        if len(self.sources) != len(self.layers):
            raise ValueError(f"one student state per distilled teacher state: {self.sources} for {self.layers}")
        self.gates = gates
        self.loss = loss
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
        return [projection(hidden[i]) for i, projection in zip(self.sources, self.projections, strict=True)], expected


def student_from_teacher(teacher: SpeechEncoder, dropout: float) -> SpeechEncoder:
    """A trainable copy of the teacher with the given dropout and no layer drop."""
    config = teacher.config.replace(
        dropout=dropout, attention_dropout=dropout, activation_dropout=dropout, projection_dropout=dropout, layer_drop=0.0
    )
    student = SpeechEncoder(config, initialize=False)
    student.load_state_dict(teacher.state_dict())
    return student


def load_teacher(teacher: str, runtime: training.Runtime) -> SpeechEncoder:
    """The frozen teacher, in eval mode on the run's device."""
    from upstreams import load_upstream

    model = load_upstream(teacher).to(runtime.device).eval()
    model.requires_grad_(False)
    return model


def check_layers(layers: list[int], model: SpeechEncoder, what: str = "the teacher") -> None:
    """Refuse hidden-state indices ``model`` does not have (it has ``0 .. num_layers``)."""
    if max(layers) > model.config.num_layers or min(layers) < 0:
        raise ValueError(f"--distill-layers {layers}: {what} has hidden states 0..{model.config.num_layers}")


# ---------------------------------------------------------------------- audio
class CorpusAudio:
    """Training utterances of a prepared corpus, read crop by crop (no need to hold the corpus in memory).

    Lengths are 16 kHz samples as :func:`tasks.audio.load_audio` returns them (read from the headers),
    crops are read by :func:`tasks.audio.load_audio_window`: a 16 kHz file reads only the crop, a file
    at another rate is resampled whole for each crop (correct, but slower)."""

    def __init__(self, corpus: str | os.PathLike, min_samples: int) -> None:
        paths = training.training_wavs(corpus)
        lengths = [audio_num_samples(p) for p in tqdm(paths, desc="audio lengths", unit="file", leave=False)]
        kept = [(p, n) for p, n in zip(paths, lengths, strict=True) if n >= min_samples]
        if not kept:
            raise ValueError(f"{corpus}: no training utterance has {min_samples} samples or more")
        self.paths = [p for p, _ in kept]
        self.lengths = [n for _, n in kept]
        logger.info("%d training utterances, %.2f h (%d shorter than %d samples skipped)", len(kept),
                    sum(self.lengths) / SAMPLE_RATE / 3600, len(paths) - len(kept), min_samples)  # fmt: skip

    def batch(self, crops: list[tuple[int, int, int]]) -> Tensor:
        """``[batch, samples]`` float32 from ``(item, start, num_samples)`` triples (equal lengths);
        :class:`tasks.audio.AudioError` naming the file for a crop past its end."""
        return torch.stack([load_audio_window(self.paths[item], start, size) for item, start, size in crops])


def corpus_audio(
    corpus: str | os.PathLike, teacher: SpeechEncoder, config: DPHuBERTConfig, device: torch.device
) -> tuple[CorpusAudio, Tensor]:
    """The corpus's training audio (utterances of at least ``min_seconds`` and one frame) and a probe
    batch ``[<= 4, <= 4 s]`` of its first utterances, on ``device``, for checks on the final model."""
    audio = CorpusAudio(corpus, min_samples=max(teacher.config.receptive_field, round(config.min_seconds * SAMPLE_RATE)))
    probe_samples = min(4 * SAMPLE_RATE, *audio.lengths[:4])
    probe = audio.batch([(i, 0, probe_samples) for i in range(min(4, len(audio.lengths)))]).to(device)
    return audio, probe


# ---------------------------------------------------------------------- training
@dataclass
class Stage:
    """What differs between stages: ``prune`` adds the gates' regulariser, whose target sparsity rises
    linearly from ``target_from`` to the run's sparsity over the first ``sparsity_warmup`` of the steps."""

    number: int
    steps: int
    lr: float
    warmup: float
    prune: bool
    target_from: float = 0.0
    label: str = "DPHuBERT"  # shown on the progress bar

    @classmethod
    def schedule(cls, config: DPHuBERTConfig, prune: bool, **changes) -> list[Stage]:
        """The run's stages: ``stage1_*`` (pruning when ``prune``), then ``stage2_*`` if it has steps."""
        stages = [cls(1, config.stage1_steps, config.stage1_lr, config.stage1_warmup, prune=prune, **changes)]
        if config.stage2_steps:
            stages.append(cls(2, config.stage2_steps, config.stage2_lr, config.stage2_warmup, prune=False, **changes))
        return stages


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
    loss_distill, l1, cosine = student.loss(predicted, [teacher_hidden[i] for i in student.layers])
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
    batches = batching.bucketed_batches(
        audio.lengths, int(config.batch_seconds * SAMPLE_RATE), int(config.crop_seconds * SAMPLE_RATE),
        teacher.config.downsample_rate, config.seed + 7919 * stage.number, runtime.rank, runtime.world_size, start=step,
    )  # fmt: skip
    sparsity_warmup = max(1, round(config.sparsity_warmup * stage.steps))
    log = open(work / "log.jsonl", "a", encoding="utf-8") if runtime.is_main else None  # noqa: SIM115
    progress = tqdm(total=stage.steps, initial=step, desc=f"{stage.label} stage {stage.number}", disable=not runtime.is_main)
    entries = []
    student.train()
    while step < stage.steps:
        waveforms = audio.batch(next(batches)).to(runtime.device, non_blocking=True)
        target = None
        if stage.prune:
            target = stage.target_from + (config.sparsity - stage.target_from) * min(1.0, step / sparsity_warmup)
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


# ---------------------------------------------------------------------- the run folder
@dataclass
class RecipeRun:
    """One resumable run of a distillation recipe, writing its compact checkpoint to ``out``.

    Attributes:
        method: the registry name, recorded in the checkpoint's metadata.
        teacher: the teacher spec as given.
        out: the output folder (the compact checkpoint); ``work`` holds the run's own files.
        config: the schedule (DPHuBERT's settings; a recipe may use only some of them).
        recorded: the recipe's own settings (``summary.json``'s ``config``).
        settings: what defines the run (a rerun must match it); ``run_config.json``.
    """

    method: str
    teacher: str
    out: Path
    work: Path
    preset: str
    config: DPHuBERTConfig
    recorded: dict
    settings: dict
    runtime: training.Runtime
    generator: torch.Generator
    started: float


def start_run(
    method: str,
    teacher: str,
    out: str | os.PathLike,
    *,
    corpus: str | os.PathLike,
    preset: str,
    device: str | None,
    config: DPHuBERTConfig,
    work_dir: str,
    recorded: dict | None = None,
) -> RecipeRun | None:
    """Set up a run in ``out/work_dir``, or return None when ``out`` already holds it complete.

    ``recorded`` is what defines the run besides the teacher, corpus, preset and processes (default:
    every field of ``config``; ``threads`` never counts). A folder holding a run with other settings
    is refused. Seeds torch, numpy and Python with ``config.seed``, and makes the CPU generator of
    the gates' initialisation and noise (the same on every process).
    """
    from tasks.corpora.manifest import CorpusInfo

    out = Path(out)
    work = out / work_dir
    runtime = training.setup_runtime(device)
    if config.threads is not None and runtime.device.type == "cpu":
        torch.set_num_threads(config.threads)
    recorded = dataclasses.asdict(config) if recorded is None else dict(recorded)
    settings = {"teacher": str(teacher), "corpus_fingerprint": CorpusInfo.read(corpus).fingerprint, "preset": preset,
                "world_size": runtime.world_size, **recorded}  # fmt: skip
    settings.pop("threads", None)
    if _check_or_write_settings(work, settings, runtime, method) and (work / "summary.json").is_file() and is_compact_checkpoint(out):
        logger.info("%s is complete; nothing to do", out)
        if runtime.is_main:
            _remove_resume_files(work)
        return None
    started = time.perf_counter()
    training.seed_everything(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    return RecipeRun(method, str(teacher), out, work, preset, config, recorded, settings, runtime, generator, started)


def finish_run(run: RecipeRun, final: SpeechEncoder, summary: dict, measure_cost: bool = True) -> None:
    """Save ``final`` to ``run.out`` with ``summary`` as its compression metadata (plus the mean
    distillation loss of the last ten logged steps, when there are any), then ``cost.json`` and
    ``summary.json``; remove the resume points."""
    if run.runtime.is_main:
        log = run.work / "log.jsonl"
        lines = log.read_text(encoding="utf-8").splitlines()[-10:] if log.is_file() else []
        if lines:
            summary["final_distill_loss"] = round(float(np.mean([json.loads(line)["distill"] for line in lines])), 5)
        save_compact(final, run.out, metadata={"source": f"harness compress --method {run.method}", "compression": summary})
        if measure_cost:
            _record_cost(final, run.out)
        write_json(run.work / "summary.json", {**summary, "config": run.recorded,
                                              "wall_seconds_this_invocation": round(time.perf_counter() - run.started, 1)})  # fmt: skip
        _remove_resume_files(run.work)
        logger.info("%s: %d -> %d parameters (sparsity %.4f, target %.4f) in %.1f min; saved to %s", run.method,
                    summary["teacher_params"], summary["params"], summary["achieved_sparsity"], summary["sparsity"],
                    (time.perf_counter() - run.started) / 60, run.out)  # fmt: skip
    run.runtime.barrier()


def _record_cost(model: SpeechEncoder, out: Path) -> None:
    """``cost.json`` beside the checkpoint (:func:`upstreams.cost.try_record_cost`): a failed
    measurement is logged, never fatal (the model is saved)."""
    try_record_cost(model, out)


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


def _check_or_write_settings(work: Path, settings: dict, runtime: training.Runtime, method: str) -> bool:
    """True if ``work`` already holds a run with these settings; raises if it holds another."""
    path = work / "run_config.json"
    if path.is_file():
        existing = json.loads(path.read_text(encoding="utf-8"))
        if existing != json.loads(json.dumps(settings)):
            changed = sorted(k for k in settings if existing.get(k) != json.loads(json.dumps(settings)).get(k))
            raise ValueError(f"{work.parent} holds a {method} run with other settings ({', '.join(changed)}); use another --out")
        return True
    if runtime.is_main:
        work.mkdir(parents=True, exist_ok=True)
        write_json(path, settings)
    runtime.barrier()
    return False
