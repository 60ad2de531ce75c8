"""``convexity_dphubert``: convexity chooses the depth, DPHuBERT prunes inside the kept layers.

The two ideas together: the convexity paper's (the later layers can go) and DPHuBERT's (prune
heads, FFN units and conv channels jointly with distillation). Recipe
(``compress_convexity_dphubert``)::

    score    graph convexity of the target labels on every hidden state of the teacher
             (``convexity.score_layers``, convexity's --labels and --max-points)
    depth    ``select_layers`` with --rule picks d layers (the deepest choice over the label types)
    truncate the teacher's first d layers; its hidden states 0..d are the teacher's own, so it is
             also the teacher DPHuBERT distils from (the same targets, d layers cheaper)
    prune    DPHuBERT's two stages on the truncated model (``dphubert.prune_and_distill``) to the
             budget (1 - s) x the WHOLE teacher's parameters, so that rows compare at equal size;
             stage 1's target sparsity rises from the truncated model's own (1 - P_d / P) to s; the
             pruned model is always projected onto the budget (tolerance 0: at most one FFN unit under)
    save     compact checkpoint in OUT with ``kept_layers`` = d and ``teacher_layers`` = L in its
             compression metadata (the leaderboard shows ``convexity_dphubert, d/L layers``), and
             OUT/convexity.json + convexity.png (the curves and the cut, as convexity writes them)

Under budget: when the d kept layers alone already have no more parameters than the budget
(for instance at the size of a shallower convexity depth under ``--budgets matched``), there is
nothing for DPHuBERT to prune, and distilling would not change the model either (its states are
the teacher's). The method then saves the truncated teacher as it is, logs a warning, and says so
in the metadata (``under_budget: true``, ``pruned: false``, ``achieved_sparsity`` above the
target) rather than refusing, so that a sweep over budgets finishes and shows where the hybrid
is plain convexity pruning.

Work files in ``OUT/convexity_dphubert/``: ``run_config.json``, ``convexity.json`` (the scores and
the choice, reused by a resumed run), and DPHuBERT's ``log.jsonl``, ``stage{1,2}.pt``, ``pruned/``,
``summary.json``.

Run::

    harness compress --method convexity_dphubert --labels all --sparsity 0.75 --out runs/convexity_dphubert-0.75
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path

from core.paths import CONVEXITY_FILE, portable_path
from harness.compression.convexity.curves import attach_curves, read_curves_file, write_curves_file
from harness.compression.convexity.method import cached_score_layers
from harness.compression.convexity.options import (
    AVERAGES,
    DEFAULT_AVERAGE,
    DEFAULT_LABELS,
    DEFAULT_RULE,
    MAX_POINTS,
    parse_labels,
)
from harness.compression.convexity.plot import plot_convexity
from harness.compression.convexity.selection import RULES, select_layers
from harness.compression.distillation_recipe import (
    RecipeRun,
    check_layers,
    finish_run,
    load_teacher,
    start_run,
)
from harness.compression.dphubert.method import default_distill_layers, prune_and_distill
from harness.compression.dphubert.options import DPHuBERTConfig, resolve_config
from upstreams.model import SpeechEncoder

logger = logging.getLogger(__name__)
WORK_DIR = "convexity_dphubert"


def compress_convexity_dphubert(
    teacher: str,
    out: str | os.PathLike,
    *,
    corpus: str | os.PathLike,
    preset: str = "demo",
    device: str | None = None,
    sparsity: float = DPHuBERTConfig.sparsity,
    labels: str = DEFAULT_LABELS,
    rule: str = DEFAULT_RULE,
    max_points: int | None = None,
    average: str | None = None,
    measure_cost: bool = True,
    scores_cache: str | os.PathLike | None = None,
    **options,
) -> Path:
    """Choose the depth by convexity, then prune inside it with DPHuBERT to ``sparsity`` of the whole
    teacher; write the compact checkpoint to ``out`` and return it.

    ``options`` override fields of DPHuBERT's preset (``stage1_steps``, ``seed``, ...). Rerunning
    with the same arguments resumes a killed run (the scoring is not redone), or returns at once
    when it is complete.
    """
    if preset not in MAX_POINTS:
        raise ValueError(f"unknown convexity_dphubert preset {preset!r}; choose one of {', '.join(MAX_POINTS)}")
    label_types = parse_labels(labels)
    if rule not in RULES:
        raise ValueError(f"--rule {rule!r}: choose one of {', '.join(RULES)}")
    config = resolve_config(preset, sparsity, {"budget_tolerance": 0.0, **options})
    max_points = max_points or MAX_POINTS[preset]
    average = average or DEFAULT_AVERAGE
    if average not in AVERAGES:
        raise ValueError(f"--average {average!r}: choose one of {', '.join(AVERAGES)}")
    recorded = {**dataclasses.asdict(config), "labels": list(label_types), "rule": rule, "max_points": max_points}
    if average != DEFAULT_AVERAGE:  # the default keeps the settings (and a resumed run) as before
        recorded["average"] = average
    run = start_run("convexity_dphubert", teacher, out, corpus=corpus, preset=preset, device=device, config=config,
                    work_dir=WORK_DIR, recorded=recorded)  # fmt: skip
    if run is None:
        return Path(out)
    full = load_teacher(teacher, run.runtime)
    teacher_params, teacher_layers = full.num_params(), full.config.num_layers
    choice = choose_depth(run, full, corpus, label_types, rule, max_points, average, scores_cache)
    depth = choice["kept_layers"]
    truncated = full.truncate(depth).eval().requires_grad_(False)
    del full
    budget = round((1.0 - config.sparsity) * teacher_params)
    summary = {
        "method": "convexity_dphubert", "teacher": portable_path(teacher), "sparsity": config.sparsity, "dir": str(run.out),
        "kept_layers": depth, "teacher_layers": teacher_layers, "labels": list(label_types), "rule": rule,
        "reason": choice["selection"]["reason"], "truncated_params": truncated.num_params(), "budget": budget,
    }  # fmt: skip
    if truncated.num_params() <= budget:
        logger.warning("convexity_dphubert: the %d kept layers alone have %d parameters, within the budget of %d "
                       "(sparsity %.4f >= target %.4f): nothing to prune; saving the truncated teacher as it is",
                       depth, truncated.num_params(), budget, 1 - truncated.num_params() / teacher_params,
                       config.sparsity)  # fmt: skip
        final = truncated
        summary.update(under_budget=True, pruned=False,
                       note="the kept depth alone is within the budget: truncated only, as convexity at this depth")  # fmt: skip
    else:
        layers = config.distill_layers or default_distill_layers(depth)
        check_layers(layers, truncated, f"the kept depth ({depth} layers)")
        start = 1.0 - truncated.num_params() / teacher_params
        final, budget, prune_summary = prune_and_distill(run, truncated, teacher_params, layers, corpus, target_from=start)
        summary.update(under_budget=False, pruned=True, distill_layers=layers, preset=preset,
                       stage1_steps=config.stage1_steps, stage2_steps=config.stage2_steps,
                       world_size=run.runtime.world_size, **prune_summary)  # fmt: skip
    params = final.num_params()
    summary.update(achieved_sparsity=round(1.0 - params / teacher_params, 5), params=params, teacher_params=teacher_params)
    finish_run(run, final, summary, measure_cost)
    if run.runtime.is_main:
        attach_curves(run.out, read_curves_file(run.out).curves)  # for the records made from it
    return run.out


def choose_depth(
    run: RecipeRun, teacher: SpeechEncoder, corpus: str | os.PathLike, label_types: tuple[str, ...], rule: str,
    max_points: int, average: str = DEFAULT_AVERAGE, scores_cache: str | os.PathLike | None = None,
) -> dict:
    """Score the teacher's hidden states on the labels and pick the depth (on the main process; a
    resumed run reads the choice back from ``work/convexity.json``). Writes ``OUT/convexity.json``
    and ``OUT/convexity.png`` as convexity does; returns the curves, ``kept_layers`` and ``selection``."""
    saved = run.work / CONVEXITY_FILE
    if run.runtime.is_main and not saved.is_file():
        started = time.perf_counter()
        scores = cached_score_layers(run.teacher, teacher, corpus, label_types, max_points, run.config.seed,
                                     run.runtime.device, probes=False, average=average, cache=scores_cache)  # fmt: skip
        selection = select_layers(scores.curves, rule)
        details = {"selection": selection.to_dict(), "counts": scores.counts, "corpus": str(corpus),
                   "seconds": round(time.perf_counter() - started, 1), "average": average, "by_average": scores.by_average}
        write_curves_file(run.out, scores.curves, selection.num_layers, **details)
        other = next(name for name in scores.by_average if name != average)
        plot_convexity(scores.curves, run.out / "convexity.png", selection=selection,
                       title=f"Graph convexity per layer: {run.teacher}", other=(other, scores.by_average[other]))  # fmt: skip
        write_curves_file(run.work, scores.curves, selection.num_layers, **details)  # last: the choice is made
        logger.info("convexity_dphubert: %s", selection.reason)
    run.runtime.barrier()
    return read_curves_file(run.work).data
