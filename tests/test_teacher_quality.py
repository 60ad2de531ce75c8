"""studies/teacher_quality.py: the teacher against FBANK with paired intervals."""

from __future__ import annotations

from types import SimpleNamespace

from studies import teacher_quality


def _script():
    return teacher_quality


def _record(errors: list[int]) -> SimpleNamespace:
    ids = [f"u{i}" for i in range(len(errors))]
    return SimpleNamespace(per_utterance={"ids": ids, "numerator": errors, "denominator": [10] * len(errors)})


def test_a_lower_error_rate_is_significantly_better_and_the_table_shows_the_interval():
    script = _script()
    wer = SimpleNamespace(higher_is_better=False)
    teacher = [_record([1, 2, 1, 0, 2] * 20) for _ in range(3)]  # 12 % WER
    fbank = [_record([5, 4, 6, 5, 5] * 20) for _ in range(3)]  # 50 %
    row = script._intervals({"teacher": teacher, "fbank": fbank}, wer)
    assert row["teacher_significantly_better"] and row["difference_interval"][1] < 0
    assert row["teacher_interval"][0] < 12.0 < row["teacher_interval"][1]
    same = script._intervals({"teacher": teacher, "fbank": teacher}, wer)
    assert same["difference_interval"] == [0.0, 0.0] and not same["teacher_significantly_better"]

    summary = {"tasks": {"asr": {"metric": "wer", "higher_is_better": False, **row,
                                 "teacher": {"mean": 12.0, "std": 0.0, "values": [12.0] * 3},
                                 "fbank": {"mean": 50.0, "std": 0.0, "values": [50.0] * 3}}}}  # fmt: skip
    line = script.to_markdown(summary).splitlines()[-1]
    low, high = row["difference_interval"]
    assert f"-38.00 [{low:+.2f}, {high:+.2f}], significant" in line and "| asr (wer ↓) |" in line
    assert script._intervals({"teacher": [SimpleNamespace(per_utterance=None)], "fbank": fbank[:1]}, wer) == {}
