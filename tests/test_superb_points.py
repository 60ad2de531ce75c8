"""SUPERB's own per-task points on real-corpus benchmarks, with the leaderboard's fixed references."""

from __future__ import annotations

import pytest

from leaderboard.aggregate import SCORE_COLUMN, SUPERB_MACS_COLUMN, build_leaderboard, high_column, low_column
from leaderboard.render import to_markdown
from leaderboard.superb_points import SUPERB_REFERENCES, points_interval, superb_points
from tasks.benchmarks import Benchmark, get_benchmark

#: ../shared/REFERENCE.md section 8 (PR PER, ASR WER, SID acc, IC acc) and the points they give by
#: SUPERB's rule (section 6), worked out by hand: e.g. HuBERT Base ASR
#: (100 - 6.42 - (100 - 23.18)) / ((100 - 3.62) - (100 - 23.18)) = 16.76 / 19.56 = 0.8569.
PUBLISHED = {
    "HuBERT Base": ({"pr": 5.41, "asr": 6.42, "sid": 81.42, "slu": 98.34}, {"pr": 976.0, "asr": 856.9, "sid": 873.6, "slu": 995.3}),
    "DPHuBERT": ({"pr": 9.67, "asr": 10.47, "sid": 76.83, "slu": 97.92}, {"pr": 921.8, "asr": 649.8, "sid": 808.2, "slu": 990.6}),
}  # fmt: skip


@pytest.mark.parametrize("model", sorted(PUBLISHED))
def test_published_rows_get_their_superb_points(model):
    values, points = PUBLISHED[model]
    for task, value in values.items():
        assert superb_points(task, value) == pytest.approx(points[task], abs=0.05), task


def test_the_fixed_references_are_0_and_1000_and_lower_is_better_metrics_turn():
    for task, reference in SUPERB_REFERENCES.items():
        assert superb_points(task, reference.baseline) == pytest.approx(0.0, abs=1e-9)
        assert superb_points(task, reference.topline) == pytest.approx(1000.0)
    assert superb_points("asr", 10.0) > superb_points("asr", 12.0)  # fewer errors, more points
    assert points_interval("asr", 9.0, 11.0) == (superb_points("asr", 11.0), superb_points("asr", 9.0))
    with pytest.raises(KeyError, match="no fixed reference values for task 'er'"):
        superb_points("er", 60.0)


def _record(upstream, task, correct, total, corpus, method=None):
    metric, higher = ("wer", False) if task == "asr" else ("accuracy", True)
    numerator = [1] * correct + [0] * (total - correct)
    value = 100.0 * correct / total
    info = {"name": upstream, "ckpt_sha256": method}
    if method:
        info["compression"] = {"method": method, "teacher": "hubert", "sparsity": 0.75, "dir": None}
    return {
        "record_version": 1, "date": "2026-12-01T10:00:00+00:00",
        "task": {"name": task, "metrics": [metric], "main_metric": metric, "higher_is_better": higher},
        "main_score": {"name": metric, "value": value, "higher_is_better": higher, "split": "test"},
        "metrics": {"test": {metric: value}}, "upstream": info,
        "corpus": {"name": corpus, "fingerprint": "f00d"}, "config": {"preset": "paper"},
        "per_utterance": {"metric": metric, "ids": [f"u{i}" for i in range(total)],
                          "numerator": numerator, "denominator": [1] * total},
    }  # fmt: skip


def test_a_real_corpus_table_shows_superb_points_beside_its_own_score():
    records = [_record("fbank", "sid", 20, 100, "voxceleb1"), _record("hubert", "sid", 81, 100, "voxceleb1"),
               _record("pruned_hubert", "sid", 77, 100, "voxceleb1", method="dphubert")]  # fmt: skip
    records[1]["upstream"]["macs_superb_g"] = 1669.0  # what a LibriSpeech test-clean evaluation records
    (table,) = build_leaderboard(records, get_benchmark("voxceleb1-paper"))
    frame = table.frame.set_index("upstream")
    assert frame.loc["hubert", SUPERB_MACS_COLUMN] == 1669.0 and not table.higher_is_better[SUPERB_MACS_COLUMN]
    points = "SID SUPERB points ↑"
    assert frame.loc["hubert", points] == pytest.approx(superb_points("sid", 81.0))
    assert frame.loc["hubert", SCORE_COLUMN] == pytest.approx(1000.0)  # its own score: relative to the teacher
    assert frame.loc["hubert", low_column(points)] < frame.loc["hubert", points] < frame.loc["hubert", high_column(points)]
    markdown = to_markdown([table])
    assert "SUPERB points: the SUPERB leaderboard's per-task points" in markdown


def test_the_embedded_benchmark_has_no_superb_points():
    records = [_record("fbank", "sid", 5, 40, "synthspeech"), _record("hubert", "sid", 30, 40, "synthspeech")]
    for record in records:
        record["config"]["preset"] = "demo"
    (table,) = build_leaderboard(records, Benchmark("sid only", ("sid",), corpus="synthspeech", schedule="demo"))
    assert not [c for c in table.frame.columns if "SUPERB points" in c or c == SUPERB_MACS_COLUMN]
    assert not get_benchmark("synthspeech-demo").superb_points and get_benchmark("librispeech-paper").superb_points
