"""Cost of Base-shaped encoders and of compressed ones: parameters, GMACs per second, latency, RTF.

Random weights (cost does not depend on them). Models: HuBERT / WavLM / wav2vec 2.0 Base, a
DPHuBERT-sized HuBERT (heads, FFN units and conv channels pruned uniformly to the largest size
under DPHuBERT's published 23.6 M parameters; whole heads make the steps coarse: 21.6 M) and HuBERT Base truncated to 6 layers. Run:

    .venv/bin/python benchmarks/bench_cost.py                 # 10 s utterance, 3 timed runs
    .venv/bin/python benchmarks/bench_cost.py --seconds 4 --models hubert_base --output cost.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging

import torch

from upstreams.config import expected_num_params
from upstreams.cost import measure_cost
from upstreams.model import SpeechEncoder, base_config

logger = logging.getLogger("bench_cost")

DPHUBERT_PARAMS = 23.59e6


def uniform_masks(model: SpeechEncoder, keep: float) -> dict[str, torch.Tensor]:
    """Keep the first ``keep`` fraction (at least one) of every conv layer's channels, heads and FFN units."""
    masks = {}
    for name, shape in model.mask_shapes().items():
        if not shape:
            continue
        value = torch.zeros(shape)
        value[: max(1, round(shape[0] * keep))] = 1.0
        masks[name] = value
    return masks


def dphubert_sized() -> SpeechEncoder:
    """HuBERT Base pruned uniformly until the parameter formula gives about DPHuBERT's size."""
    model = SpeechEncoder(base_config("hubert"), initialize=False)
    low, high = 0.0, 1.0
    for _ in range(30):  # bisection on the kept fraction, using the exact parameter formula
        keep = (low + high) / 2
        counts = {name: float(value.sum()) for name, value in uniform_masks(model, keep).items()}
        low, high = (
            (keep, high) if expected_num_params(model.config, counts) < DPHUBERT_PARAMS else (low, keep)
        )
    model.reset_parameters()
    model.set_masks(uniform_masks(model, low))
    return model.prune()


MODELS = {
    "hubert_base": lambda: SpeechEncoder(base_config("hubert")),
    "wavlm_base": lambda: SpeechEncoder(base_config("wavlm")),
    "wav2vec2_base": lambda: SpeechEncoder(base_config("wav2vec2")),
    "dphubert_sized": dphubert_sized,
    "hubert_base_6_layers": lambda: SpeechEncoder(base_config("hubert")).truncate(6),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models", default=",".join(MODELS), help=f"comma-separated subset of {', '.join(MODELS)}"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="utterance length (default 10)")
    parser.add_argument("--repeats", type=int, default=3, help="timed forward passes (median reported)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--output", help="also write the reports as JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    reports = {}
    for name in args.models.split(","):
        if name not in MODELS:
            parser.error(f"--models: unknown model {name!r}; choose from {', '.join(MODELS)}")
        torch.manual_seed(0)
        model = MODELS[name]().to(args.device).eval()
        reports[name] = measure_cost(model, seconds=args.seconds, repeats=args.repeats)
        logger.info("%-22s %s", name, reports[name].summary())
    print(
        f"\n{'model':22} {'params M':>9} {'GMACs/s':>8} {'latency ms':>11} {'RTF':>7}   ({args.seconds:g} s utterance)"
    )
    for name, report in reports.items():
        print(
            f"{name:22} {report.params / 1e6:9.2f} {report.macs_per_second / 1e9:8.2f} "
            f"{report.latency_s * 1e3:11.0f} {report.real_time_factor:7.4f}"
        )
    print(f"device: {next(iter(reports.values())).device}, torch {torch.__version__}")
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            json.dump(
                {name: dataclasses.asdict(report) for name, report in reports.items()}, handle, indent=2
            )


if __name__ == "__main__":
    main()
