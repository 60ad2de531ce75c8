"""A teacher's layer-wise structure, for its model card: per hidden state (0 is the CNN feature
projection, 1 .. L the transformer layers), the graph convexity of every label type (averaged over
classes, as the harness's rule uses, and over pairs, as the convexity authors' nnconvexity does),
its linear-probe accuracy and block influence, and where each curve peaks.

The scores are those of ``harness compress --method convexity`` (read from, or written to, the
scores cache ``CACHE/convexity``). Writes ``OUT/teacher_layers.md`` and ``OUT/teacher_layers.json``
and prints the table. Example::

    .venv/bin/python -m studies.teacher_layers --teacher upstreams/teachers/synth-hubert-tiny \\
        --corpus data/synth-tiny --out runs/teacher-layers
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch

from core.files import atomic_path, write_json
from core.paths import portable_path
from harness.commands import check_directories
from harness.compression.convexity.method import cached_score_layers
from harness.compression.convexity.options import LABEL_TYPES, MAX_POINTS, parse_labels
from harness.compression.convexity.selection import select_layers
from harness.devices import resolve_device

logger = logging.getLogger("teacher_layers")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="upstreams/teachers/synth-hubert-tiny", help="a spec load_upstream takes")
    parser.add_argument("--corpus", type=Path, default=Path("data/synth-tiny"), help="prepared corpus directory")
    parser.add_argument("--labels", default="all", help=f"label types: all or some of {', '.join(LABEL_TYPES)}")
    parser.add_argument("--preset", default="demo", choices=sorted(MAX_POINTS), help="segments per label (demo 2000, paper 5000)")
    parser.add_argument("--out", type=Path, default=Path("runs/teacher-layers"))
    parser.add_argument("--cache", type=Path, default=Path("data/cache"), help="cache folder; scores in CACHE/convexity")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="auto")
    return parser.parse_args(argv)


def layer_table(scores, label_types: tuple[str, ...]) -> tuple[str, dict]:
    """The Markdown table (one row per hidden state) and its JSON form."""
    states = len(scores.curves[label_types[0]])
    headers = ["hidden state"]
    for label in label_types:
        headers += [f"{label} convexity (classes)", f"{label} convexity (pairs)", f"{label} probe"]
    headers.append("block influence (this state → the next)")
    peaks = {label: int(np.argmax(scores.curves[label])) for label in label_types}
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    for state in range(states):
        cells = [str(state)]
        for label in label_types:
            mark = " (peak)" if peaks[label] == state else ""
            cells += [f"{scores.by_average['classes'][label][state]:.1f}{mark}", f"{scores.by_average['pairs'][label][state]:.1f}",
                      f"{scores.probes[label][state]:.3f}"]  # fmt: skip
        influence = scores.influence[label_types[0]]
        cells.append(f"{influence[state]:.4f}" if state < len(influence) else "")
        lines.append("| " + " | ".join(cells) + " |")
    choice = select_layers({label: scores.curves[label] for label in label_types}, "peak")
    summary = {
        "states": states, "peaks": peaks, "rule": "peak", "kept_layers_all_labels": choice.num_layers, "reason": choice.reason,
        "convexity": scores.by_average, "probes": scores.probes, "block_influence": scores.influence, "counts": scores.counts,
    }  # fmt: skip
    notes = [f"- {label}: convexity peaks at hidden state {peaks[label]}, probe at {int(np.argmax(scores.probes[label]))}"
             for label in label_types]  # fmt: skip
    notes.append(f"- the peak rule over all of them keeps {choice.num_layers} of {states - 1} layers ({choice.reason})")
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n", summary


def main(argv: list[str] | None = None) -> None:
    from upstreams import load_upstream

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    label_types = parse_labels(args.labels)
    check_directories(out=args.out, cache=args.cache)  # before the scoring, not after it
    torch.set_num_threads(args.threads)
    device = torch.device(resolve_device(None if args.device == "auto" else args.device))
    model = load_upstream(args.teacher)
    scores = cached_score_layers(args.teacher, model, args.corpus, label_types, MAX_POINTS[args.preset], 0, device,
                                 probes=True, cache=args.cache / "convexity")  # fmt: skip
    table, summary = layer_table(scores, label_types)
    write_json(args.out / "teacher_layers.json", {"teacher": portable_path(args.teacher), "corpus": portable_path(args.corpus),
                                                  "preset": args.preset, **summary})  # fmt: skip
    with atomic_path(args.out / "teacher_layers.md") as tmp:
        tmp.write_text(table, encoding="utf-8")
    logger.info("layer-wise structure of %s:\n%s", args.teacher, table)


if __name__ == "__main__":
    main()
