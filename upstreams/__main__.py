"""Command line for checkpoints: convert any supported source to a compact checkpoint, show, or cost it.

python -m upstreams convert facebook/hubert-base-ls960 ckpts/hubert_base     # also: torchaudio:HUBERT_BASE, a .pt
python -m upstreams info ckpts/hubert_base
python -m upstreams cost ckpts/hubert_base --seconds 10 --record            # adds this device to cost.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from upstreams.checkpoint import is_compact_checkpoint, save_compact


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m upstreams", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser(
        "convert", help="write SOURCE as a compact checkpoint (config.json + model.safetensors)"
    )
    convert.add_argument(
        "source", help="compact/transformers dir, hub name, torchaudio:BUNDLE, fairseq/WavLM/DPHuBERT .pt"
    )
    convert.add_argument("output", help="directory to write, e.g. ckpts/hubert_base")
    convert.add_argument(
        "--family", choices=["hubert", "wavlm", "wav2vec2"], help="for formats that cannot tell (DPHuBERT)"
    )
    convert.add_argument("--no-cost", action="store_true", help="skip measuring parameters / MACs / latency")
    info = commands.add_parser("info", help="print the architecture and parameter count of SOURCE")
    info.add_argument("source")
    cost = commands.add_parser("cost", help="measure parameters, MACs per second and latency of SOURCE")
    cost.add_argument("source")
    cost.add_argument("--seconds", type=float, default=10.0, help="utterance length (default 10)")
    cost.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    cost.add_argument(
        "--record", action="store_true", help="store the figures in SOURCE/cost.json (compact dirs)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from upstreams.cost import measure_cost, record_cost
    from upstreams.importers import load_upstream

    model = load_upstream(args.source, **({"family": args.family} if args.command == "convert" else {}))
    if args.command == "convert":
        save_compact(model, args.output, metadata={"converted_from": str(args.source)})
        if not args.no_cost:
            record_cost(args.output, measure_cost(model))
        print(f"{args.output}: {model.config.describe()}, {model.num_params()} parameters")
    elif args.command == "info":
        print(
            json.dumps(
                {
                    "describe": model.config.describe(),
                    "num_params": model.num_params(),
                    "config": model.config.to_dict(),
                },
                indent=2,
            )
        )
    else:
        report = measure_cost(model.to(args.device), seconds=args.seconds)
        print(report.summary())
        if args.record:
            if not is_compact_checkpoint(args.source):
                parser.error("--record needs a compact checkpoint directory as SOURCE")
            print(record_cost(args.source, report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
