"""What every distillation recipe's kill-and-resume test checks at the end (DPHuBERT, distill, the
convexity-guided DPHuBERT): the resumed run's compact model and step log equal the uninterrupted one's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from upstreams.checkpoint import load_compact


def read_log(out: Path, work_dir: str) -> list[dict]:
    """The step log of a run in ``out`` (``out/WORK_DIR/log.jsonl``), one dict per step."""
    return [json.loads(line) for line in (out / work_dir / "log.jsonl").read_text().splitlines()]


def assert_resumed_equals_whole(whole: Path, resumed: Path, work_dir: str, steps: tuple[int, int]) -> None:
    """Same architecture and weights, every step of both stages logged once, the same losses."""
    a, b = load_compact(whole), load_compact(resumed)
    assert a.config == b.config
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4, msg=name)
    log = read_log(resumed, work_dir)
    assert [(e["stage"], e["step"]) for e in log] == [(1, s) for s in range(1, steps[0] + 1)] + [
        (2, s) for s in range(1, steps[1] + 1)
    ]
    assert [e["distill"] for e in log] == pytest.approx([e["distill"] for e in read_log(whole, work_dir)], abs=1e-4)
