"""Speed of the graph convexity score: 13 layers x 5000 items x 768 dims, 50 classes.

Target (issue 6): under 60 s in total on 2 CPU cores. Run:

    .venv/bin/python benchmarks/bench_convexity.py            # all cores, defaults
    .venv/bin/python benchmarks/bench_convexity.py --workers 1

The data are Gaussian clusters whose separation rises then falls over the layers (like word
information in a speech model), kept overlapping enough that every layer's kNN graph is one
connected component: the slow case for Dijkstra (a fragmented graph is much faster).
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import time

import numpy as np

from harness.compression.convexity.graph import ConvexityConfig, graph_convexity_per_layer

logger = logging.getLogger("bench_convexity")


def make_layers(num_layers: int, num_items: int, dim: int, num_classes: int, seed: int):
    """Clustered float32 data per layer and their integer labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, num_items)
    directions = rng.normal(size=(num_classes, dim)).astype(np.float32)
    separation = 0.1 + 0.2 * np.sin(np.pi * np.arange(num_layers) / (num_layers - 1))  # 0.1 .. 0.3
    layers = []
    for scale in separation:
        noise = rng.normal(size=(num_items, dim)).astype(np.float32)
        layers.append(directions[labels] * np.float32(scale) + noise)
    return layers, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=13)
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--classes", type=int, default=50)
    parser.add_argument("--workers", type=int, default=None, help="Dijkstra processes (default: all cores)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    layers, labels = make_layers(args.layers, args.items, args.dim, args.classes, args.seed)
    config = ConvexityConfig(workers=args.workers, progress=False)
    logger.info("cores available: %d; load average before: %s", len(os.sched_getaffinity(0)), os.getloadavg())
    start = time.perf_counter()
    cpu_start = _cpu_seconds()
    results = graph_convexity_per_layer(layers, labels, config)
    total = time.perf_counter() - start
    cpu = _cpu_seconds() - cpu_start
    for index, result in enumerate(results):
        logger.info(
            "layer %2d  convexity %6.2f  knn %5.2f s  paths %5.2f s",
            index, result.score, result.timings["knn_s"], result.timings["paths_s"],
        )
    logger.info("load average after: %s", os.getloadavg())
    logger.info(
        "%d layers x %d items x %d dims: %.1f s total, %.2f s per layer (wall)",
        args.layers, args.items, args.dim, total, total / args.layers,
    )
    logger.info("CPU time (this process and its workers): %.1f s, i.e. %.1f s on 2 otherwise idle cores", cpu, cpu / 2)


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children (the workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


if __name__ == "__main__":
    main()
