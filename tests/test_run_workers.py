"""`harness run`'s worker pool does not outlive its parent: killed or terminated, no worker goes on
writing records unsupervised (an orphaned worker once kept adding records to a published table)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# A parent that starts two workers, each sleeping a minute, prints their pids and waits for them.
PARENT = """
import time
from harness.workers import Workers

with Workers(2) as workers:
    workers.submit(("a",), time.sleep, 60)
    workers.submit(("b",), time.sleep, 60)
    deadline = time.time() + 60
    while len(workers._pool._processes) < 2 and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(3)  # let the workers run their initializer (it arms the parent-death signal)
    print(" ".join(str(pid) for pid in workers._pool._processes), flush=True)
    for _ in workers.results():
        pass
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead but still listed until reaped
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _start_parent() -> tuple[subprocess.Popen, list[int]]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, env=env)
    line = parent.stdout.readline()
    workers = [int(pid) for pid in line.split()]
    assert len(workers) == 2, f"parent printed {line!r}"
    assert all(_alive(pid) for pid in workers)
    return parent, workers


def _wait_gone(pids: list[int], seconds: float = 20) -> list[int]:
    deadline = time.time() + seconds
    while time.time() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.2)
    return [pid for pid in pids if _alive(pid)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_workers_stop_with_their_parent(signum):
    parent, workers = _start_parent()
    try:
        parent.send_signal(signum)
        code = parent.wait(timeout=30)
        assert code != 0
        assert _wait_gone(workers) == [], f"workers outlived a parent stopped by signal {signum}"
    finally:
        parent.kill()
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
