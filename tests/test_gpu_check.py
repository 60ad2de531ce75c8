"""benchmarks/gpu_check.py runs every path it times on the CPU too (``--device cpu --quick``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_gpu_check_runs_on_the_cpu_and_prints_one_table():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--steps", "1"],
                          capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    checks = [row.split("|")[1].strip() for row in rows]
    assert checks == ["extraction", "online head steps", "DPHuBERT stage 1", "pretraining", "attention", "attention",
                      "attention"]  # fmt: skip
    figures = [row.split("|")[3].strip() for row in rows]
    assert all(figure.endswith(("audio h / wall h", "ms / step", "skipped (--quick)")) or "TFLOP / step" in figure
               for figure in figures), figures  # fmt: skip
    assert "gpu_check on CPU" in done.stdout
