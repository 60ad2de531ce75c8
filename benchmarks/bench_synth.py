"""SynthSpeech generation speed: minutes of audio per second of wall time, in a fresh directory.

    .venv/bin/python benchmarks/bench_synth.py --preset tiny --workers 2

Prints the real-time factor (audio duration / wall time; the target is >= 50x on 2 cores) and
the machine's load average, since other processes on the same cores slow it down.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

from tasks.corpora.manifest import CorpusInfo
from tasks.corpora.synth import synthesize_corpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        root = synthesize_corpus(Path(tmp) / "corpus", preset=args.preset, seed=args.seed, workers=args.workers)
        seconds = time.perf_counter() - started
        info = CorpusInfo.read(root)
    audio_s = info.hours * 3600
    result = {
        "preset": args.preset,
        "workers": args.workers or os.cpu_count(),
        "cpu_count": os.cpu_count(),
        "audio_minutes": round(audio_s / 60, 1),
        "wall_seconds": round(seconds, 1),
        "real_time_factor": round(audio_s / seconds, 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(result, indent=2))  # noqa: T201 - the benchmark's output


if __name__ == "__main__":
    main()
