"""Row labels, the reference and zero-point notes, the parameter budget view and the Pareto frontier."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pandas as pd
import pytest

from leaderboard.aggregate import build_leaderboard
from leaderboard.budgets import NEEDS_COUNTS, NO_DIFFERENCE, ONE_METHOD, cluster_by_params
from leaderboard.points import Point, pareto_frontier
from leaderboard.render import to_html, to_markdown
from leaderboard.views import budgets_csv, plot_pareto

N = 100  # test utterances


def record(upstream, correct, *, method=None, params=1e6, kept=None, selected=None, counts=True, ckpt=None):
    """A SID record whose first ``correct`` of N test utterances are right (per-utterance counts kept)."""
    outcomes = [1] * correct + [0] * (N - correct)
    value = 100.0 * correct / N
    info = {"name": upstream, "ckpt": ckpt, "ckpt_sha256": None, "params": params, "macs": params * 100, "input_seconds": 1.0}
    if method:
        info["ckpt_sha256"] = hashlib.sha256(f"{method}-{params}-{kept}".encode()).hexdigest()
        info["compression"] = {"method": method, "teacher": "upstreams/teachers/tiny", "sparsity": 0.5, "dir": None}
        if kept is not None:
            info["compression"].update(kept_layers=kept, teacher_layers=6)
        if selected is not None:
            info["compression"]["selected"] = selected
    out = {
        "record_version": 1, "date": "2026-12-01T10:00:00+00:00",
        "task": {"name": "sid", "metrics": ["accuracy"], "main_metric": "accuracy", "higher_is_better": True},
        "main_score": {"name": "accuracy", "value": value, "higher_is_better": True, "split": "test"},
        "metrics": {"test": {"accuracy": value}}, "upstream": info,
        "corpus": {"name": "views-corpus", "fingerprint": "f00d"}, "config": {"preset": "demo"}, "seeds": {"train": 0},
    }  # fmt: skip
    if counts:
        out["per_utterance"] = {"metric": "accuracy", "ids": [f"u{i}" for i in range(N)], "numerator": outcomes,
                                "denominator": [1] * N}  # fmt: skip
    return out


def base(counts=True):
    """FBANK (10 % right) and the teacher (90 %), from which the compressed rows below were made."""
    return [record("fbank", 10, params=0, counts=counts),
            record("hubert", 90, params=6e6, ckpt="/elsewhere/upstreams/teachers/tiny", counts=counts)]  # fmt: skip


def test_params_within_one_percent_share_a_budget_and_beyond_do_not():
    assert cluster_by_params([100.0, 100.9]) == [[0, 1]]  # 0.9 % apart
    assert cluster_by_params([101.1, 100.0]) == [[1], [0]]  # 1.1 % apart, smallest first
    assert cluster_by_params([3e6, 1e6, 1.009e6, 3.02e6, 1.2e6]) == [[1, 2], [4], [0, 3]]
    (table,) = build_leaderboard([
        *base(), record("p", 60, method="convexity", params=1e6), record("p", 50, method="dphubert", params=1.009e6),
        record("p", 40, method="dphubert", params=1.011e6),
    ])  # fmt: skip
    assert [[p.params for p in b.points] for b in table.budgets] == [[1e6, 1.009e6], [1.011e6]]
    assert [b.verdict for b in table.budgets][1] == ONE_METHOD


def test_identical_counts_differ_by_exactly_zero_and_no_method_is_best():
    (table,) = build_leaderboard([*base(), record("p", 60, method="convexity", params=2e6),
                                  record("p", 60, method="dphubert", params=2.01e6)])  # fmt: skip
    (budget,) = table.budgets
    (comparison,) = budget.comparisons
    assert comparison.difference == 0.0 and comparison.interval == (0.0, 0.0)
    assert np.all(comparison.leader.samples - comparison.other.samples == 0.0)
    assert budget.verdict == NO_DIFFERENCE and not comparison.significant
    assert f"2.00 M (convexity, dphubert): convexity − dphubert +0.0 [+0.0, +0.0]; {NO_DIFFERENCE}" in to_markdown([table])
    frame = pd.read_csv(io.StringIO(budgets_csv([table])))
    assert list(frame["leader − row significant"].dropna()) == ["no"] and set(frame["budget verdict"]) == {NO_DIFFERENCE}


def test_a_clearly_better_method_is_named_best_in_every_format():
    (table,) = build_leaderboard([*base(), record("p", 85, method="convexity", params=2e6, kept=3),
                                  record("p", 30, method="dphubert", params=2e6), record("p", 80, method="convexity", params=2e6, kept=2)])  # fmt: skip
    (budget,) = table.budgets
    (comparison,) = budget.comparisons  # the best convexity row (85 %) against the dphubert row
    assert comparison.leader.score > comparison.other.score and comparison.interval[0] > 0.0
    assert budget.verdict == "best: convexity" and len(budget.points) == 3
    assert "best: convexity" in to_markdown([table]) and "best: convexity" in to_html([table])
    frame = pd.read_csv(io.StringIO(budgets_csv([table])))
    assert list(frame["budget verdict"].unique()) == ["best: convexity"]
    loser = frame[frame["method"] == "dphubert"].iloc[0]
    assert loser["leader − row"] == pytest.approx(comparison.difference) and loser["leader − row 95% low"] > 0
    assert loser["leader − row significant"] == "yes"
    assert frame[frame["method"] == "convexity"]["leader − row significant"].isna().all()  # the leader and its own other rows
    assert loser["SUPERB score 95% low"] < loser["SUPERB score"] < loser["SUPERB score 95% high"]


def test_without_per_utterance_counts_the_budgets_show_points_and_say_what_a_comparison_needs():
    (table,) = build_leaderboard([*base(counts=False), record("p", 85, method="convexity", params=2e6, counts=False),
                                  record("p", 30, method="dphubert", params=2e6, counts=False)])  # fmt: skip
    (budget,) = table.budgets
    assert budget.verdict == NEEDS_COUNTS and all(p.interval is None and p.score is not None for p in budget.points)
    markdown = to_markdown([table])
    assert NEEDS_COUNTS in markdown and "keep no per-utterance counts" in markdown


def test_pareto_frontier_of_a_hand_made_set():
    def point(label, params, macs, score):
        return Point(label, "compressed", "m", params, macs, score)

    points = [point("a", 1, 5, 10.0), point("b", 2, 1, 5.0), point("c", 2, 6, 20.0), point("d", 3, 7, 20.0),
              point("e", 4, 2, 15.0), point("no score", 0, 0, None), point("no size", None, None, 99.0)]  # fmt: skip
    assert [p.label for p in pareto_frontier(points, "params")] == ["a", "c", "d"]  # d: equal score, none higher
    assert [p.label for p in pareto_frontier(points, "macs_per_second")] == ["b", "e", "c", "d"]  # a: e is cheaper and better
    assert plot_pareto([]).startswith(b"\x89PNG")


def test_fbank_leaves_the_plot_only_when_it_would_squeeze_the_other_rows():
    from leaderboard.views import _off_scale

    fbank = Point("fbank", "fbank", None, 0, 0.002, 0.0)
    close = [Point("t", "teacher", None, 5e6, 0.48, 1000.0), Point("c", "compressed", "m", 2e6, 0.3, 860.0, interval=(845.0, 875.0))]
    spread = [*close, Point("d", "compressed", "m", 1e6, 0.2, 200.0)]
    assert _off_scale([fbank, *close]) == [fbank]  # 845 .. 1000 is under a third of 0 .. 1000
    assert _off_scale([fbank, *spread]) == []  # a row near FBANK: everything stays on the axes
    assert _off_scale(close) == []


def test_rows_say_what_they_are_and_the_notes_name_reference_and_zero_point():
    (table,) = build_leaderboard([
        *base(), record("p", 70, method="convexity", params=3e6, kept=3, selected=True),
        record("p", 60, method="convexity", params=2e6, kept=2, selected=False),
        record("p", 50, method="convexity", params=1e6, kept=1), record("wavlm", 80, params=6e6),
    ])  # fmt: skip
    methods = dict(zip(table.frame["upstream"], table.frame["method"], strict=False))  # one "p": the last
    assert methods["fbank"] == "none (FBANK, zero point)" and methods["wavlm"] == "none (uncompressed)"
    assert sorted(table.frame["method"])[:3] == ["convexity, 1/6 layers", "convexity, 2/6 layers", "convexity, 3/6 layers (rule's pick)"]
    assert methods["hubert"] == "none (teacher)"
    assert "score reference (= 1000) on sid: hubert (teacher)" in table.notes
    assert "score zero point (= 0) on every task: fbank (FBANK, zero point)" in table.notes
    hubert = next(line for line in to_markdown([table]).splitlines() if line.startswith("| hubert "))
    assert "| none (teacher) " in hubert


def test_the_depth_shows_for_every_method_that_changes_it():
    (table,) = build_leaderboard([
        *base(), record("p", 70, method="convexity_dphubert", params=3e6, kept=4),
        record("p", 60, method="distill", params=2e6, kept=2), record("p", 50, method="dphubert", params=1e6),
    ])  # fmt: skip
    compressed = sorted(m for m in table.frame["method"] if not m.startswith("none"))
    assert compressed == ["convexity_dphubert, 4/6 layers", "distill, 2/6 layers", "dphubert"]
