"""``distill``: distillation into a fixed student of a given size, the baseline DPHuBERT claims to beat.

DPHuBERT's claim is that pruning jointly with distillation beats distilling into a fixed student of
the same size, as DistilHuBERT (Chang, Yang, Lee, ICASSP 2022) does. This method is that student, at
any budget, trained on exactly what DPHuBERT is trained on. Recipe (``compress_distill``)::

    size     the student keeps the teacher's CNN extractor, feature projection, positional
             convolution and width D, and takes the teacher's first k layers (``size_student``)
    init     from the teacher: the extractor and the first k layers; narrowed layers keep the FFN
             units (and heads) of largest weight magnitude (``build_student``)
    heads    one D->D linear head per distilled teacher state (identity-initialised, as DPHuBERT's
             projections); dropped with the training state: the checkpoint is the student alone
    loss     prediction (default, DistilHuBERT): every head reads the student's last state and
             predicts one teacher state (default every L/3-th: 4, 8, 12 of 12 layers); per head
             mean L1 minus mean log sigmoid(cosine) over frames, summed over heads.
             layer2layer (DPHuBERT's loss, for a comparison with the loss held equal): student state
             round(t k / L) against teacher state t for 0 and every L/3-th t, L1 - cosine, averaged
    train    DPHuBERT's two stages of the same preset, without gates or regulariser: stage 1 at the
             stage-1 steps, learning rate and warm-up, stage 2 at the stage-2 ones, the same batches
             (seeded per stage as DPHuBERT's), seeds, crops and resume points; so both methods see
             the same audio for the same number of steps (stage-1 + stage-2 steps)
    save     compact checkpoint in OUT (loads as s3prl ``pruned_{family}``)

Sizing to a budget ``B = (1 - s) x teacher parameters`` (the whole model counts):

1. the deepest k whose k whole teacher layers fit under B; if that is at most 1 % under B, the
   student is those k layers (DistilHuBERT: 2 layers of HuBERT Base, 0.9 % under s = 0.75);
2. otherwise one layer more, k + 1, with the teacher's heads and as many FFN units as fit, spread
   evenly over the layers (no layer above the teacher's width): at most one FFN unit (2 D + 1
   parameters) under B;
3. if even k + 1 attention blocks with no FFN units exceed B, each layer keeps fewer heads (the most
   that fit), then FFN units as in 2.

Work files in ``OUT/distill/``: ``run_config.json``, ``log.jsonl``, ``stage{1,2}.pt`` (resume points,
removed when the run is complete) and ``summary.json``, as DPHuBERT's.

Run::

    harness compress --method distill --sparsity 0.75 --corpus synth --preset demo --out runs/distill-0.75
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from core.paths import portable_path
from harness.compression.distill_options import (
    DEFAULT_LOSS,
    LOSSES,
    SCHEDULE_FIELDS,
    SIZE_TOLERANCE,
    check_options,
    resolve_schedule,
)
from harness.compression.distillation_recipe import (
    DistillStudent,
    Stage,
    check_layers,
    corpus_audio,
    distill_loss,
    finish_run,
    load_teacher,
    start_run,
    student_from_teacher,
    train_stage,
)
from harness.compression.dphubert.method import default_distill_layers
from harness.compression.dphubert.options import DPHuBERTConfig
from upstreams.config import EncoderConfig, expected_num_params, mask_names
from upstreams.model import SpeechEncoder

logger = logging.getLogger(__name__)
WORK_DIR = "distill"


# ---------------------------------------------------------------------- the student's size
def first_layers(config: EncoderConfig, depth: int) -> EncoderConfig:
    """``config`` with only its first ``depth`` transformer layers (what ``SpeechEncoder.truncate`` makes)."""
    return config.replace(**{name: getattr(config, name)[:depth] for name in ("attention_heads", "use_attention", "ffn_dims", "use_ffn")})


def student_params(config: EncoderConfig, heads: list[int], units: list[int]) -> int:
    """Parameters of ``config``'s model keeping ``heads[l]`` heads and ``units[l]`` FFN units in layer ``l``."""
    names = mask_names(config)
    kept = {}
    for layer in range(config.num_layers):
        if f"layer.{layer}.heads" in names:
            kept[f"layer.{layer}.heads"] = heads[layer]
        if f"layer.{layer}.ffn_units" in names:
            kept[f"layer.{layer}.ffn_units"] = units[layer]
    return int(expected_num_params(config, kept))


def spread(caps: list[int], total: int) -> list[int]:
    """``total`` units over slots of capacity ``caps``, as evenly as the caps allow (water-filling);
    fewer when the caps hold fewer."""
    low, high = 0, max(caps, default=0)
    while low < high:  # the largest even level that fits
        middle = (low + high + 1) // 2
        low, high = (middle, high) if sum(min(c, middle) for c in caps) <= total else (low, middle - 1)
    units = [min(c, low) for c in caps]
    left = total - sum(units)
    for i, cap in enumerate(caps):
        if left and units[i] < cap:
            units[i] += 1
            left -= 1
    return units


def size_student(teacher: EncoderConfig, budget: int, tolerance: float = SIZE_TOLERANCE) -> tuple[int, list[int], list[int]]:
    """``(depth, heads per layer, FFN units per layer)`` of the student for ``budget`` parameters
    (the rule in the module docstring). Raises ``ValueError`` when no student fits."""
    full = [first_layers(teacher, k) for k in range(1, teacher.num_layers + 1)]
    fitting = [c for c in full if c.num_params() <= budget]
    if fitting and budget - fitting[-1].num_params() <= tolerance * budget:
        whole = fitting[-1]
        return whole.num_layers, whole.num_heads, list(whole.ffn_dims)
    depth = len(fitting) + 1
    if depth > teacher.num_layers:
        raise ValueError(f"a budget of {budget} parameters holds the whole teacher ({teacher.num_params()}); give a sparsity above 0")
    config = full[depth - 1]
    unit_cost = 2 * config.embed_dim + 1
    for level in range(max(config.num_heads), 0, -1):
        heads = [min(h, level) for h in config.num_heads]
        base = student_params(config, heads, [0] * depth)
        if base <= budget:
            units = spread(config.ffn_dims, (budget - base) // unit_cost)
            return depth, heads, units
    raise ValueError(
        f"a budget of {budget} parameters cannot hold the teacher's CNN, projection and {depth} layer(s) of one "
        f"head each ({student_params(config, [1] * depth, [0] * depth)}); choose a lower sparsity"
    )


@torch.no_grad()
def build_student(teacher: SpeechEncoder, depth: int, heads: list[int], units: list[int]) -> SpeechEncoder:
    """The teacher's first ``depth`` layers, each narrowed to ``heads[l]`` heads and ``units[l]`` FFN
    units of largest magnitude (a head: the norm of its value and output weights; a unit: the norm of
    its input row times that of its output column). It computes what the truncated teacher computes
    with the other heads and units masked out."""
    truncated = teacher.truncate(depth)
    masks = {}
    for index, layer in enumerate(truncated.transformer.layers):
        attention, ffn = layer.attention, layer.feed_forward
        if attention is not None and attention.num_heads and heads[index] < attention.num_heads:
            width = attention.head_dim
            value = attention.v_proj.weight.reshape(attention.num_heads, width, -1).norm(dim=(1, 2))
            output = attention.out_proj.weight.reshape(-1, attention.num_heads, width).norm(dim=(0, 2))
            masks[f"layer.{index}.heads"] = _top(value * output, heads[index])
        if ffn is not None and ffn.output_dense.in_features and units[index] < ffn.output_dense.in_features:
            score = ffn.intermediate_dense.weight.norm(dim=1) * ffn.output_dense.weight.norm(dim=0)
            masks[f"layer.{index}.ffn_units"] = _top(score, units[index])
    if not masks:
        return truncated
    truncated.set_masks(masks)
    return truncated.prune()


def _top(scores: Tensor, count: int) -> Tensor:
    mask = torch.zeros_like(scores)
    mask[torch.topk(scores, count).indices] = 1.0
    return mask


# ---------------------------------------------------------------------- the loss
def prediction_loss(student: list[Tensor], teacher: list[Tensor]) -> tuple[Tensor, float, float]:
    """DistilHuBERT's loss: per predicted state, mean L1 minus mean log sigmoid of the cosine
    similarity over frames; summed over the states. Returns the loss and the mean L1 and cosine."""
    l1 = torch.stack([F.l1_loss(s.float(), t.float()) for s, t in zip(student, teacher, strict=True)])
    cosine = [F.cosine_similarity(s.float(), t.float(), dim=-1) for s, t in zip(student, teacher, strict=True)]
    similarity = torch.stack([F.logsigmoid(c).mean() for c in cosine])
    mean_cosine = float(torch.stack([c.detach().mean() for c in cosine]).mean())
    return (l1 - similarity).sum(), float(l1.detach().mean()), mean_cosine


def distilled_states(loss: str, layers: list[int] | None, teacher_layers: int, depth: int) -> tuple[list[int], list[int]]:
    """``(teacher states, student states)`` compared by ``loss`` (see the module docstring)."""
    if loss == "prediction":
        targets = layers or default_distill_layers(teacher_layers)[1:]
        return targets, [depth] * len(targets)
    targets = layers or default_distill_layers(teacher_layers)
    return targets, [round(t * depth / teacher_layers) for t in targets]


# ---------------------------------------------------------------------- the recipe
def check_budget(teacher: EncoderConfig, config: DPHuBERTConfig, loss: str) -> None:
    """Refuse, before any work, a budget no fixed student of ``teacher`` meets, and states it lacks."""
    depth, _, _ = size_student(teacher, round((1.0 - config.sparsity) * teacher.num_params()))
    layers, _ = distilled_states(loss, config.distill_layers, teacher.num_layers, depth)
    if max(layers) > teacher.num_layers:
        raise ValueError(f"--distill-layers {config.distill_layers}: the teacher has hidden states 0..{teacher.num_layers}")


def check_student_size(preset: str, options: dict, teacher: EncoderConfig) -> None:
    """The registry's teacher check: the options, then a budget no fixed student of ``teacher`` meets."""
    check_budget(teacher, check_options(preset, options), options.get("loss") or DEFAULT_LOSS)


def compress_distill(
    teacher: str,
    out: str | os.PathLike,
    *,
    corpus: str | os.PathLike,
    preset: str = "demo",
    device: str | None = None,
    sparsity: float = DPHuBERTConfig.sparsity,
    loss: str = DEFAULT_LOSS,
    measure_cost: bool = True,
    **options,
) -> Path:
    """Distil ``teacher`` into a fixed student of ``(1 - sparsity)`` of its parameters; write the
    compact checkpoint to ``out`` and return it.

    ``options`` override the schedule fields of DPHuBERT's preset (``stage1_steps``, ``seed``, ...;
    see ``distill_options.SCHEDULE_FIELDS``). Rerunning with the same arguments resumes a killed
    run, or returns at once when it is complete.
    """
    if loss not in LOSSES:
        raise ValueError(f"--loss {loss!r}: choose one of {', '.join(LOSSES)}")
    config = resolve_schedule(preset, sparsity, options)
    recorded = {name: getattr(config, name) for name in SCHEDULE_FIELDS} | {"loss": loss}
    run = start_run("distill", teacher, out, corpus=corpus, preset=preset, device=device, config=config,
                    work_dir=WORK_DIR, recorded=recorded)  # fmt: skip
    if run is None:
        return Path(out)
    teacher_model = load_teacher(teacher, run.runtime)
    teacher_params = teacher_model.num_params()
    budget = round((1.0 - config.sparsity) * teacher_params)
    depth, heads, units = size_student(teacher_model.config, budget)
    layers, sources = distilled_states(loss, config.distill_layers, teacher_model.config.num_layers, depth)
    check_layers(layers, teacher_model)
    audio, _ = corpus_audio(corpus, teacher_model, config, run.runtime.device)
    encoder = student_from_teacher(build_student(teacher_model, depth, heads, units), config.student_dropout)
    sized = student_params(first_layers(teacher_model.config, depth), heads, units)
    if encoder.num_params() != sized:
        raise RuntimeError(f"the student has {encoder.num_params()} parameters, its sizing said {sized}")
    student = DistillStudent(encoder, layers, sources=sources, loss=prediction_loss if loss == "prediction" else distill_loss)
    student.to(run.runtime.device)
    logger.info("distill: teacher %s (%d parameters), budget %d (sparsity %.3f): student %s (%d parameters); "
                "%s loss, teacher states %s from student states %s", teacher_model.config.describe(), teacher_params,
                budget, config.sparsity, encoder.config.describe(), encoder.num_params(), loss, layers, sources)  # fmt: skip

    for stage in Stage.schedule(config, prune=False, label="distill"):
        if stage.number == 1 and (run.work / "stage2.pt").is_file():
            continue  # stage 2 resumes from its own state
        train_stage(stage, student, teacher_model, audio, config, run.runtime, run.work, teacher_params, run.generator)

    final = student.encoder.eval()
    params = final.num_params()
    summary = {
        "method": "distill", "teacher": portable_path(teacher), "sparsity": config.sparsity, "dir": str(run.out),
        "achieved_sparsity": round(1.0 - params / teacher_params, 5), "params": params, "teacher_params": teacher_params,
        "budget": budget, "kept_layers": depth, "teacher_layers": teacher_model.config.num_layers,
        "student": {"layers": depth, "init": f"teacher layers 1-{depth}", "heads": final.config.num_heads,
                    "ffn_dims": final.config.ffn_dims},
        "loss": loss, "distill_layers": layers, "student_states": sources, "preset": preset,
        "stage1_steps": config.stage1_steps, "stage2_steps": config.stage2_steps, "world_size": run.runtime.world_size,
    }  # fmt: skip
    finish_run(run, final, summary, measure_cost)
    return run.out
