"""One command that exercises every GPU path of the project and prints one table.

    .venv/bin/python benchmarks/gpu_check.py --device cuda          # about 5-8 min on an H100-class GPU
    .venv/bin/python benchmarks/gpu_check.py --device cpu --quick   # the same paths, tiny shapes (tested)

Rows, all with random weights (speed does not depend on them), HuBERT Base shape (``--quick``: the
embedded 5.3 M-parameter teacher's shape and shorter audio):

- extraction: the frozen encoder over batches of audio, bf16 autocast on a GPU (and float32 for
  comparison): audio hours per wall hour;
- online head steps: the ASR head trained on frames the upstream makes inside the loop
  (:class:`harness.evaluation.online.OnlineSet`, real wav files written to a temporary directory);
- DPHuBERT stage 1: the recipe's own distill + prune step (``benchmarks/bench_dphubert.py``):
  step time, peak memory, MFU from FLOPs counted by ``torch.utils.flop_counter`` against the GPU's
  peak dense bf16 FLOP/s (known GPUs or ``--peak-tflops``);
- pretraining: one HuBERT masked-prediction step (encoder, head, AdamW);
- attention: a forward + backward of the encoder with PyTorch's SDPA against the math kernel,
  each eager and under ``torch.compile`` (skipped with ``--quick``: compiling takes minutes on a CPU).

Each figure is the median of ``--steps`` timed repeats after warm-up, on one device, in one run.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_dphubert, beside this file

from bench_dphubert import TEACHERS, bench_stage, build_student, peak_tflops  # noqa: E402

from harness import training  # noqa: E402
from harness.compression.dphubert import method as dphubert  # noqa: E402
from harness.evaluation.heads import DownstreamModel, SplitData, collate  # noqa: E402
from harness.evaluation.online import OnlineSet  # noqa: E402
from harness.pretrain import HubertHead  # noqa: E402
from tasks.registry import get_task  # noqa: E402
from upstreams.model import SpeechEncoder  # noqa: E402

logger = logging.getLogger("gpu_check")


def timed(fn, steps: int, warmup: int, device: torch.device) -> float:
    """Median seconds of ``fn()`` over ``steps`` runs after ``warmup`` (synchronised on a GPU)."""
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def peak_memory(device: torch.device) -> str:
    if device.type != "cuda":
        return ""
    value = torch.cuda.max_memory_allocated(device) / 2**30
    torch.cuda.reset_peak_memory_stats(device)
    return f"peak {value:.1f} GiB"


class Wrapped(torch.nn.Module):
    """An encoder in the s3prl upstream contract ``(wavs, lens) -> (states, lens)``, for OnlineSet."""

    def __init__(self, encoder: SpeechEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.downsample_rates = [320] * (encoder.config.num_layers + 1)

    def forward(self, wavs, wavs_len):
        states, lengths = self.encoder(wavs, wavs_len)
        return list(states), [lengths] * len(states)


def check_extraction(encoder, device, bf16, args) -> list[list[str]]:
    audio = torch.randn(args.batch, int(args.seconds * 16000), device=device)
    rows = []
    for label, dtype in (("bf16 autocast", bf16), ("float32", None)) if bf16 else (("float32", None),):
        def forward(dtype=dtype):
            with torch.inference_mode(), autocast(device, dtype):
                encoder(audio)

        seconds = timed(forward, args.steps, 2, device)
        rows.append(["extraction", f"{label}, {args.batch} x {args.seconds:g} s",
                     f"{args.batch * args.seconds / seconds:,.0f} audio h / wall h", peak_memory(device)])  # fmt: skip
    return rows


def check_online(encoder, device, bf16, args, folder: Path) -> list[list[str]]:
    paths, rng = [], np.random.default_rng(0)
    for i in range(args.batch * 2):
        path = folder / f"utt{i}.wav"
        sf.write(path, (0.1 * rng.standard_normal(int(args.seconds * 16000))).astype(np.float32), 16000)
        paths.append(str(path))
    upstream = Wrapped(encoder).to(device)
    shape = (encoder.config.num_layers + 1, encoder.config.embed_dim, 320)
    online = OnlineSet(paths, paths, [args.seconds] * len(paths), lambda: upstream, shape,
                       "bfloat16" if bf16 else "float32")  # fmt: skip
    task = get_task("asr")
    task.fit_labels(["A B C"])
    target = task.encode("A B C")
    head = task.build_head(shape[1], task.preset("demo" if args.quick else "paper").head)
    model = DownstreamModel(online, head).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    data = SplitData(online, online.rows(paths), [], [])

    def step():
        features, lengths = collate(data, list(range(args.batch)), str(device))
        task.loss(model(features, lengths.to(device)), lengths, [target] * args.batch).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    seconds = timed(step, args.steps, 1, device)
    return [["online head steps", f"ASR head, {args.batch} x {args.seconds:g} s, upstream in the loop",
             f"{seconds * 1000:,.0f} ms / step", peak_memory(device)]]  # fmt: skip


def check_dphubert(teacher, device, args) -> list[list[str]]:
    runtime = training.Runtime(device)
    student = build_student(teacher, dphubert.default_distill_layers(teacher.config.num_layers), "stage1")
    report = bench_stage("stage1", student, teacher, runtime, argparse.Namespace(
        batch=args.batch, seconds=args.seconds, steps=args.steps, warmup=2, peak_tflops=args.peak_tflops))  # fmt: skip
    mfu = f", MFU {100 * report['mfu']:.1f} % of {report['peak_tflops_assumed']:g} TFLOP/s" if "mfu" in report else ""
    memory = f"peak {report['peak_memory_gib']:.1f} GiB" if "peak_memory_gib" in report else f"peak RSS {report['peak_rss_gib']:.1f} GiB"
    return [["DPHuBERT stage 1", f"{report['student_params'] / 1e6:.1f} M student, {args.batch} x {args.seconds:g} s",
             f"{report['seconds_per_step_median'] * 1000:,.0f} ms / step, {report['tflops_per_step']:.2f} TFLOP / step{mfu}",
             memory]]  # fmt: skip


def check_pretraining(encoder, device, bf16, args) -> list[list[str]]:
    model = encoder.train()
    head = HubertHead(encoder.config.embed_dim, 256, 500, 0.1).to(device)
    parameters = [*model.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=1e-4)
    audio = torch.randn(args.batch, int(args.seconds * 16000), device=device)
    frames = training.frames_for(audio.shape[1])
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 500, (args.batch, frames), device=device)

    def step():
        mask = training.span_mask(args.batch, frames, 0.8, 10, generator, device)
        with autocast(device, bf16):
            hidden, _ = model(audio, frame_mask=mask)
            logits = head(model.last_hidden_state(hidden)[mask])
        loss = F.cross_entropy(logits.float(), labels[mask])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    seconds = timed(step, args.steps, 2, device)
    model.eval()
    return [["pretraining", f"HuBERT step, {args.batch} x {args.seconds:g} s", f"{seconds * 1000:,.0f} ms / step",
             peak_memory(device)]]  # fmt: skip


def check_attention(encoder, device, bf16, args) -> list[list[str]]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    audio = torch.randn(args.batch, int(args.seconds * 16000), device=device)
    rows = []
    for compiled in (False, True):
        if compiled and args.quick:
            rows.append(["attention", "SDPA and math, torch.compile", "skipped (--quick)", ""])
            continue
        model = torch.compile(encoder) if compiled else encoder
        for backend in ("SDPA (default)", "math"):
            def step(backend=backend, model=model):
                fused = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]
                kernels = [SDPBackend.MATH] if backend == "math" else [*fused, SDPBackend.MATH]
                with sdpa_kernel(kernels), autocast(device, bf16):
                    hidden, _ = model(audio)
                    hidden[-1].float().pow(2).mean().backward()

            seconds = timed(step, args.steps, 2 if compiled else 1, device)
            rows.append(["attention", f"{backend}, {'compiled' if compiled else 'eager'}, forward + backward",
                         f"{seconds * 1000:,.0f} ms / step", peak_memory(device)])  # fmt: skip
    encoder.zero_grad(set_to_none=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny shapes and few steps (the CPU smoke test)")
    parser.add_argument("--batch", type=int, default=None, help="utterances per batch (default 8; quick 2)")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per utterance (default 10; quick 1)")
    parser.add_argument("--steps", type=int, default=None, help="timed repeats per row (default 10; quick 2)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's peak dense bf16 TFLOP/s")
    args = parser.parse_args(argv)
    args.batch = args.batch or (2 if args.quick else 8)
    args.seconds = args.seconds or (1.0 if args.quick else 10.0)
    args.steps = args.steps or (2 if args.quick else 10)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    device = torch.device(args.device)
    bf16 = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    torch.manual_seed(0)
    teacher = SpeechEncoder(TEACHERS["teacher_tiny" if args.quick else "hubert_base"]()).eval().to(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    rows = check_extraction(teacher, device, bf16, args)
    with tempfile.TemporaryDirectory() as folder:
        rows += check_online(teacher, device, bf16, args, Path(folder))
    rows += check_dphubert(teacher.requires_grad_(False), device, args)
    rows += check_pretraining(teacher.requires_grad_(True), device, bf16, args)
    rows += check_attention(teacher, device, bf16, args)
    from tabulate import tabulate

    peak = peak_tflops(device, args.peak_tflops)
    print(f"## gpu_check on {name} (torch {torch.__version__}, {teacher.num_params() / 1e6:.1f} M-parameter encoder, "  # noqa: T201
          f"bf16 {'on' if bf16 else 'off'}, peak {peak or 'unknown'} TFLOP/s, load {os.getloadavg()[0]:.1f})\n")
    print(tabulate(rows, ["check", "setting", "figure", "memory"], tablefmt="github"))  # noqa: T201


if __name__ == "__main__":
    main()
