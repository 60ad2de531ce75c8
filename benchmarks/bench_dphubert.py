"""Training speed of DPHuBERT: steps per second, peak memory and (on GPUs) model-FLOPs utilisation.

Random weights (speed does not depend on them). Teacher: HuBERT Base (94.7 M parameters; or the
5.3 M-parameter embedded teacher's shape with ``--teacher teacher_tiny``).
Students, one per stage of the recipe:

- ``stage1``: a copy of the teacher with HardConcrete gates on conv channels, heads and FFN units
  (the distill + prune step, Lagrangian included);
- ``stage2``: a compact student at sparsity 0.75 (random gates projected onto the exact budget,
  about 23.7 M parameters), the final distillation step.

Each timed step is the recipe's own ``distill_step`` (teacher forward, student forward and
backward, AdamW) on a batch of random audio, under bf16 autocast on GPUs. FLOPs per step come from
``torch.utils.flop_counter`` (scaled_dot_product_attention included); MFU = FLOPs per step / step
time / the device's peak dense bf16 FLOP/s (known GPUs, or ``--peak-tflops``). Run::

    .venv/bin/python benchmarks/bench_dphubert.py                       # CPU, 4 x 4 s, 3 timed steps
    .venv/bin/python benchmarks/bench_dphubert.py --device cuda --batch 8 --seconds 10 --steps 20

Measured (2026-11, shared 2-core x86_64 CPU, 1-minute load average 2.6-3.9 from other jobs; torch
2.11; 4 x 4 s; median of 3 steps):

=========  ===========  ==============  =========  ===============  ==============
stage      student      torch threads   s / step   audio s / s      peak RSS
=========  ===========  ==============  =========  ===============  ==============
stage 1    94.4 M       1               25.2       0.64             4.43 GiB
stage 2    23.6 M       1               9.6        1.67             2.31 GiB
stage 1    94.4 M       2               36.1       0.44             4.42 GiB
stage 2    23.6 M       2               18.1       0.89             2.30 GiB
=========  ===========  ==============  =========  ===============  ==============

FLOPs per step: 1.04 TFLOP (stage 1), 0.48 TFLOP (stage 2); on the loaded CPU that is 0.03-0.05
TFLOP/s. Two threads are slower than one while other jobs hold the cores. No GPU was lent for
these figures; run with ``--device cuda`` for steps per second, peak memory and MFU there.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch

from harness import training
from harness.compression.dphubert import method as dphubert
from harness.compression.dphubert.hardconcrete import EncoderGates
from upstreams.model import SpeechEncoder, base_config

logger = logging.getLogger("bench_dphubert")

#: Peak dense bf16 tensor FLOP/s by device-name fragment (vendor datasheets).
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0,
                    "A10": 125.0, "RTX 4090": 165.0}  # fmt: skip


def _embedded_teacher_shape():
    from harness.pretrain import PretrainConfig

    return PretrainConfig().encoder_config()


#: Teacher shapes: HuBERT Base, and the 5.3 M-parameter embedded SynthSpeech teacher (for quick runs).
TEACHERS = {"hubert_base": lambda: base_config("hubert"), "teacher_tiny": _embedded_teacher_shape}


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for fragment, value in PEAK_BF16_TFLOPS.items():
        if fragment in name:
            return value
    return None


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _sdpa_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def build_student(teacher: SpeechEncoder, layers: list[int], stage: str) -> dphubert.DistillStudent:
    """``stage1``: the gated copy of the teacher; ``stage2``: a compact student at sparsity 0.75."""
    generator = torch.Generator().manual_seed(0)
    gates = EncoderGates(teacher.config, generator=generator)
    if stage == "stage1":
        return dphubert.DistillStudent(dphubert.student_from_teacher(teacher, 0.0), layers, gates)
    with torch.no_grad():
        for name in gates.names:
            gates.gate(name).log_alpha.normal_(0.0, 2.0, generator=generator)
    masks, _ = gates.project_to_budget(gates.deterministic_masks(), round(0.25 * teacher.num_params()))
    encoder = dphubert.student_from_teacher(teacher, 0.0)
    encoder.set_masks(masks)
    return dphubert.DistillStudent(encoder.prune(), layers)


def bench_stage(
    name: str, student: dphubert.DistillStudent, teacher: SpeechEncoder, runtime: training.Runtime, args
) -> dict:
    device = runtime.device
    student.to(device).train()
    prune = student.gates is not None
    lambdas = torch.nn.Parameter(torch.zeros(2, device=device)) if prune else None
    stage = dphubert.Stage(1 if prune else 2, 1000, 2e-4 if prune else 1e-4, 0.0, prune=prune)
    optimizer = dphubert.build_optimizer(student, lambdas, stage, dphubert.DPHuBERTConfig())
    waveforms = torch.randn(args.batch, int(args.seconds * 16000), device=device)
    teacher_params = teacher.num_params()

    def step() -> None:
        dphubert.distill_step(student, student, teacher, waveforms, optimizer, lambdas, 0.5 if prune else None,
                              teacher_params, 10.0, runtime)  # fmt: skip

    from torch.utils.flop_counter import FlopCounterMode

    custom = {
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops,
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_backward_flops,
    }
    with FlopCounterMode(display=False, custom_mapping=custom) as counter:
        step()  # also the first warm-up step
    flops = counter.get_total_flops()
    for _ in range(max(0, args.warmup - 1)):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(args.steps):
        started = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
    seconds = statistics.median(times)
    report = {
        "stage": name,
        "student_params": student.encoder.num_params(),
        "steps_per_second": round(1.0 / seconds, 4),
        "seconds_per_step_median": round(seconds, 4),
        "seconds_per_step_all": [round(t, 3) for t in times],
        "audio_seconds_per_second": round(args.batch * args.seconds / seconds, 2),
        "tflops_per_step": round(flops / 1e12, 4),
        "achieved_tflops_per_second": round(flops / seconds / 1e12, 3),
    }
    if device.type == "cuda":
        report["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
    else:  # resident set size peak of the whole process (ru_maxrss is in KiB on Linux)
        report["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)
    peak = peak_tflops(device, args.peak_tflops)
    if peak:
        report["mfu"] = round(flops / seconds / (peak * 1e12), 4)
        report["peak_tflops_assumed"] = peak
    student.cpu()
    return report


STAGES = ("stage1", "stage2")


def _without(argv: list[str], options: tuple[str, ...]) -> list[str]:
    """``argv`` without the given options and their values (``--opt value`` or ``--opt=value``)."""
    kept, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item in options:
            skip = True
        elif not item.startswith(tuple(option + "=" for option in options)):
            kept.append(item)
    return kept


def run_stage(name: str, args) -> tuple[dict, list[dict]]:
    """Build the teacher and one stage's student in this process and time it."""
    runtime = training.Runtime(torch.device(args.device))
    torch.manual_seed(0)
    teacher = SpeechEncoder(TEACHERS[args.teacher]()).eval().requires_grad_(False)
    student = build_student(teacher, dphubert.default_distill_layers(teacher.config.num_layers), name)
    teacher.to(runtime.device)
    machine = (
        torch.cuda.get_device_name(runtime.device) if runtime.device.type == "cuda"
        else f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"
    )  # fmt: skip
    header = {"device": machine, "autocast": str(runtime.autocast_dtype), "batch": args.batch, "seconds": args.seconds,
              "teacher": args.teacher, "teacher_params": teacher.num_params(), "torch": torch.__version__}  # fmt: skip
    logger.info("%s: student %d parameters, %d x %.1f s on %s", name, student.encoder.num_params(), args.batch,
                args.seconds, machine)  # fmt: skip
    load_before = os.getloadavg()
    report = bench_stage(name, student, teacher, runtime, args)
    if runtime.device.type == "cpu":
        report["load_average_1min_before_after"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    logger.info("%s", json.dumps(report))
    return header, [report]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--teacher", default="hubert_base", help=f"teacher shape: {' or '.join(TEACHERS)} (default hubert_base)")
    parser.add_argument("--batch", type=int, default=4, help="utterances per batch (default 4)")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds per utterance (default 4)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per stage (median reported; default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1; the FLOP count is one)")
    parser.add_argument("--stages", default="stage1,stage2", help="stage1, stage2 or both (default both)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak bf16 TFLOP/s for MFU on unknown devices")
    parser.add_argument("--output", help="also write the report as JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)

    stages = args.stages.split(",")
    for name in stages:
        if name not in STAGES:
            raise SystemExit(f"--stages: unknown stage {name!r}; use stage1, stage2 or both")
    if args.teacher not in TEACHERS:
        raise SystemExit(f"--teacher: unknown shape {args.teacher!r}; use {' or '.join(TEACHERS)}")
    if len(stages) > 1:  # one process per stage, so that each peak memory figure is its own
        reports = []
        for name in stages:
            command = [sys.executable, __file__, *_without(sys.argv[1:], ("--stages", "--output")), "--stages", name]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode:
                raise SystemExit(f"stage {name} failed:\n{done.stderr[-3000:]}")
            child = json.loads(done.stdout)
            reports += child.pop("stages")
            header = child
    else:
        header, reports = run_stage(stages[0], args)
    result = {**header, "stages": reports}
    print(json.dumps(result, indent=2))
    if args.output:
        from core.files import write_json

        write_json(args.output, result)


if __name__ == "__main__":
    main()
