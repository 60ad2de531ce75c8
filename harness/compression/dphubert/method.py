"""DPHuBERT (Peng et al., Interspeech 2023): joint distillation and structured pruning to a target sparsity.

Recipe (``compress_dphubert``; its two stages are ``prune_and_distill``, which the convexity-guided
hybrid reuses; the student, loss, training loop and run folder are ``harness.compression.distillation_recipe``)::

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

import json
import logging
import os
from pathlib import Path

import torch
from torch import Tensor

from core.paths import portable_path
from harness import training
from harness.compression.distillation_recipe import (  # noqa: F401 - re-exported: the recipe's pieces
    CorpusAudio,
    DistillStudent,
    RecipeRun,
    Stage,
    _record_cost,
    build_optimizer,
    check_layers,
    corpus_audio,
    distill_loss,
    distill_step,
    finish_run,
    load_teacher,
    start_run,
    student_from_teacher,
    train_stage,
)
from harness.compression.dphubert.hardconcrete import EncoderGates
from harness.compression.dphubert.options import (  # noqa: F401 - re-exported: the recipe's settings
    PRESETS,
    UNIT_KINDS,
    DPHuBERTConfig,
    add_arguments,
    resolve_config,
)
from upstreams.checkpoint import is_compact_checkpoint, load_compact, save_compact
from upstreams.model import SpeechEncoder

logger = logging.getLogger(__name__)
WORK_DIR = "dphubert"


# ---------------------------------------------------------------------- model pieces
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
    config = resolve_config(preset, sparsity, options)
    run = start_run("dphubert", teacher, out, corpus=corpus, preset=preset, device=device, config=config, work_dir=WORK_DIR)
    if run is None:
        return Path(out)
    teacher_model = load_teacher(teacher, run.runtime)
    teacher_params = teacher_model.num_params()
    layers = config.distill_layers or default_distill_layers(teacher_model.config.num_layers)
    check_layers(layers, teacher_model)
    final, budget, prune_summary = prune_and_distill(run, teacher_model, teacher_params, layers, corpus)
    params = final.num_params()
    summary = {
        "method": "dphubert", "teacher": portable_path(teacher), "sparsity": config.sparsity, "dir": str(run.out),
        "achieved_sparsity": round(1.0 - params / teacher_params, 5), "params": params, "teacher_params": teacher_params,
        "budget": budget, "preset": preset, "stage1_steps": config.stage1_steps, "stage2_steps": config.stage2_steps,
        "distill_layers": layers, "world_size": run.runtime.world_size, **prune_summary,
    }  # fmt: skip
    finish_run(run, final, summary, measure_cost)
    return run.out


def prune_and_distill(
    run: RecipeRun,
    teacher: SpeechEncoder,
    teacher_params: int,
    layers: list[int],
    corpus: str | os.PathLike,
    target_from: float = 0.0,
) -> tuple[SpeechEncoder, int, dict]:
    """DPHuBERT's two stages on a copy of ``teacher``, resumable in ``run.work``.

    The budget is ``(1 - sparsity) x teacher_params``, so a caller can count it on a larger model than
    the one pruned (the convexity-guided hybrid prunes a truncated teacher to a budget of the whole
    one); stage 1's target sparsity rises from ``target_from``. Returns the final compact encoder
    (eval mode), the budget and the pruning summary (projection, kept units, compact vs masked).
    """
    config, runtime, work, generator = run.config, run.runtime, run.work, run.generator
    budget = round((1.0 - config.sparsity) * teacher_params)
    audio, probe = corpus_audio(corpus, teacher, config, runtime.device)
    logger.info("DPHuBERT: pruning %s (%d parameters) to sparsity %.3f of %d parameters (%d parameters), distilling states %s",
                teacher.config.describe(), teacher.num_params(), config.sparsity, teacher_params, budget, layers)  # fmt: skip
    stage1, *stage2 = Stage.schedule(config, prune=True, target_from=target_from)

    # ---- stage 1: distil + prune
    pruned_dir = work / "pruned"
    if not is_compact_checkpoint(pruned_dir):
        gates = EncoderGates(teacher.config, pruned_structures(config, teacher.config), config.prune_blocks,
                             generator=generator)  # fmt: skip
        _check_reachable(gates, budget, config.sparsity)
        student = DistillStudent(student_from_teacher(teacher, config.student_dropout), layers, gates)
        student.to(runtime.device)
        train_stage(stage1, student, teacher, audio, config, runtime, work, teacher_params, generator)
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
    for stage in stage2:
        train_stage(stage, student, teacher, audio, config, runtime, work, teacher_params, generator)
    return student.encoder.eval(), budget, prune_summary


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
