"""Confidence intervals (leaderboard.intervals) on cases with known answers, and in the table."""

from __future__ import annotations

import math

import numpy as np
import pytest

from leaderboard.aggregate import SCORE_COLUMN, build_leaderboard, high_column, low_column
from leaderboard.intervals import Counts, Resampler, interval
from leaderboard.render import to_csv, to_markdown
from tasks.benchmarks import Benchmark
from tasks.metrics import accuracy, utterance_counts, word_error_rate


def counts(numerator, denominator=None):
    numerator = np.asarray(numerator, dtype=float)
    denominator = np.ones_like(numerator) if denominator is None else np.asarray(denominator, dtype=float)
    return Counts(tuple(str(i) for i in range(len(numerator))), numerator, denominator)


def test_binomial_proportion_interval_matches_the_normal_approximation():
    n = 400
    correct = counts([1] * (n // 2) + [0] * (n // 2))
    low, high = interval(Resampler(n, resamples=4000).samples([correct]))
    half = 1.96 * math.sqrt(0.25 / n) * 100  # 4.9 points
    assert (high - low) / 2 == pytest.approx(half, rel=0.1)
    assert low < 50.0 < high


def test_a_constant_predictor_has_a_zero_width_interval():
    assert interval(Resampler(50).samples([counts([1] * 50)])) == (100.0, 100.0)
    assert interval(Resampler(50).samples([counts([0] * 50)])) == (0.0, 0.0)


def test_identical_predictions_give_a_paired_difference_of_exactly_zero():
    rng = np.random.default_rng(1)
    errors, lengths = rng.integers(0, 5, 60), rng.integers(3, 12, 60)
    resampler = Resampler(60)
    a, b = resampler.samples([counts(errors, lengths)]), resampler.samples([counts(errors.copy(), lengths.copy())])
    assert np.all(a - b == 0.0) and interval(a - b) == (0.0, 0.0)


def test_error_rates_are_recomputed_from_summed_counts_not_averaged():
    references, hypotheses = ["a b c d e f g h", "a b"], ["a b c d e f g h", "x y"]
    errors, lengths = utterance_counts("wer", references, hypotheses)
    assert (errors, lengths) == ([0, 2], [8, 2])
    assert counts(errors, lengths).value() == word_error_rate(references, hypotheses) == 20.0  # not mean(0, 100)
    right, ones = utterance_counts("accuracy", [1, 2, 3], [1, 0, 3])
    assert 100 * sum(right) / sum(ones) == accuracy([1, 2, 3], [1, 0, 3])


def test_seeds_widen_the_interval_and_their_mean_is_the_point():
    n = 200
    same = counts([1] * 120 + [0] * 80)
    spread = [counts([1] * 100 + [0] * 100), counts([1] * 140 + [0] * 60)]
    resampler = Resampler(n)
    one = interval(resampler.samples([same, same]))
    two = interval(resampler.samples(spread))
    assert (two[1] - two[0]) > (one[1] - one[0])
    assert np.mean(resampler.samples(spread)) == pytest.approx(60.0, abs=1.0)


def record(upstream, task, outcomes, *, method=None, seed=0):
    """A record with per-utterance counts: ``outcomes`` are 1/0 per test utterance (accuracy) or
    (errors, length) pairs (WER)."""
    if task == "sid":
        numerator, denominator, metric, higher = list(outcomes), [1] * len(outcomes), "accuracy", True
    else:
        numerator, denominator = (list(x) for x in zip(*outcomes, strict=True))
        metric, higher = "wer", False
    value = 100.0 * sum(numerator) / sum(denominator)
    upstream_info = {"name": upstream, "ckpt_sha256": method}
    if method:
        upstream_info["compression"] = {"method": method, "teacher": "t", "sparsity": 0.5, "dir": None}
    return {
        "record_version": 1, "date": "2026-12-01T10:00:00+00:00",
        "task": {"name": task, "metrics": [metric], "main_metric": metric, "higher_is_better": higher},
        "main_score": {"name": metric, "value": value, "higher_is_better": higher, "split": "test"},
        "metrics": {"test": {metric: value}}, "upstream": upstream_info,
        "corpus": {"name": "synthspeech", "fingerprint": "f00d"}, "config": {"preset": "demo"},
        "seeds": {"train": seed},
        "per_utterance": {"metric": metric, "ids": [f"u{i}" for i in range(len(numerator))],
                          "numerator": numerator, "denominator": denominator},
    }  # fmt: skip


def test_the_table_carries_intervals_seeds_and_paired_tests():
    n = 40
    records = [
        record("fbank", "sid", [1] * 4 + [0] * 36),
        record("fbank", "asr", [(5, 10)] * n),
        record("hubert", "sid", [1] * 36 + [0] * 4),
        record("hubert", "asr", [(1, 10)] * n),
        record("pruned", "sid", [1] * 36 + [0] * 4, method="dphubert", seed=0),  # the teacher's answers
        record("pruned", "sid", [1] * 34 + [0] * 6, method="dphubert", seed=1),
        record("pruned", "asr", [(1, 10)] * n, method="dphubert"),
    ]
    (table,) = build_leaderboard(records, Benchmark("two tasks", ("asr", "sid"), corpus="synthspeech", schedule="demo"))
    frame = table.frame.set_index("upstream")
    sid = next(c for c in frame.columns if c.startswith("SID") and "95%" not in c)
    assert frame.loc["pruned", sid] == pytest.approx(87.5)  # the mean of the two seeds
    assert frame.loc["pruned", "head seeds"] == 2 and frame.loc["hubert", "head seeds"] == 1
    assert frame.loc["hubert", low_column(sid)] < 90.0 < frame.loc["hubert", high_column(sid)]
    assert frame.loc["hubert", low_column(SCORE_COLUMN)] <= frame.loc["hubert", SCORE_COLUMN]
    markdown = to_markdown([table])
    assert "90.00 [" in markdown and "95 % intervals: percentile bootstrap" in markdown
    assert "on asr: +0.00 [+0.00, +0.00], not significant" in markdown  # identical predictions
    assert "95% low" in to_csv([table]).splitlines()[0]


def test_records_without_counts_give_the_table_as_before():
    plain = record("fbank", "sid", [1, 0])
    del plain["per_utterance"]
    (table,) = build_leaderboard([plain])
    assert not any("95%" in c for c in table.frame.columns) and "head seeds" not in table.frame.columns


def test_a_task_where_the_reference_does_not_beat_fbank_leaves_the_score():
    """SID: the reference and FBANK answer alike, so (s - FBANK) / (ref - FBANK) would divide by noise."""
    n = 40
    records = [
        record("fbank", "sid", [1] * 30 + [0] * 10),
        record("fbank", "asr", [(5, 10)] * n),
        record("hubert", "sid", [1] * 31 + [0] * 9),  # one utterance better: not significant
        record("hubert", "asr", [(1, 10)] * n),
        record("pruned", "sid", [1] * 20 + [0] * 20, method="dphubert"),
        record("pruned", "asr", [(3, 10)] * n, method="dphubert"),
    ]
    (table,) = build_leaderboard(records, Benchmark("two tasks", ("asr", "sid"), corpus="synthspeech", schedule="demo"))
    frame = table.frame.set_index("upstream")
    assert frame.loc["pruned", SCORE_COLUMN] == pytest.approx(500.0)  # asr alone: (30 - 50) / (10 - 50)
    assert frame.loc["hubert", SCORE_COLUMN] == pytest.approx(1000.0)
    notes = " ".join(table.notes)
    assert "sid does not anchor the score" in notes and "SUPERB-style score over asr (of asr, sid)" in notes
    sid = next(c for c in frame.columns if c.startswith("SID") and "95%" not in c)
    assert frame.loc["pruned", sid] == pytest.approx(50.0)  # the column stays
    assert "not significantly, so a ratio to that difference is noise" in notes


def test_a_reference_significantly_worse_than_fbank_is_called_so():
    """ASR on synthetic speech: FBANK's WER is lower than the teacher's on every utterance."""
    n = 40
    records = [
        record("fbank", "sid", [0] * 40), record("fbank", "asr", [(1, 10)] * n),
        record("hubert", "sid", [1] * 40), record("hubert", "asr", [(3, 10)] * n),
    ]  # fmt: skip
    (table,) = build_leaderboard(records, Benchmark("two tasks", ("asr", "sid"), corpus="synthspeech", schedule="demo"))
    notes = " ".join(table.notes)
    assert "asr does not anchor the score" in notes and "significantly worse than FBANK" in notes
    assert "not significantly" not in notes and "SUPERB-style score over sid (of asr, sid)" in notes


def test_paired_samples_share_one_draw_and_refuse_other_utterances():
    from leaderboard.intervals import paired_samples

    def section(ids, errors):
        return {"ids": ids, "numerator": errors, "denominator": [4] * len(errors)}

    a = section(["u1", "u2", "u3"], [1, 2, 0])
    shuffled = section(["u3", "u1", "u2"], [0, 1, 2])  # the same counts in another order
    samples = paired_samples({"a": [a, a], "b": [shuffled, shuffled]})
    assert np.array_equal(samples["a"], samples["b"])  # aligned, and drawn the same way
    assert paired_samples({"a": [a], "b": [None]}) is None
    with pytest.raises(ValueError, match="different utterances"):
        paired_samples({"a": [a], "b": [section(["u1", "u2", "x"], [1, 2, 0])]})
