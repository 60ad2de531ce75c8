"""studies/teacher_layers.py: the per-hidden-state table of a teacher's model card."""

from __future__ import annotations

import pytest

from harness.compression.convexity.method import LayerScores
from studies import teacher_layers as script


def test_the_table_has_a_row_per_hidden_state_both_averages_and_the_peaks():
    classes = {"speaker": [70.0, 80.0, 90.0, 85.0], "word": [50.0, 60.0, 65.0, 75.0]}
    pairs = {"speaker": [71.0, 81.0, 92.0, 86.0], "word": [52.0, 61.0, 66.0, 77.0]}
    probes = {"speaker": [0.8, 0.85, 0.9, 0.88], "word": [0.5, 0.6, 0.7, 0.8]}
    influence = {"speaker": [0.1, 0.05, 0.02], "word": [0.1, 0.05, 0.02]}
    scores = LayerScores(classes, probes, influence, {}, {"classes": classes, "pairs": pairs})
    table, summary = script.layer_table(scores, ("speaker", "word"))
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 4 and rows[2].startswith("| 2 | 90.0 (peak) | 92.0 | 0.900 | 65.0 |")
    assert rows[3].split(" | ")[4] == "75.0 (peak)" and rows[3].endswith("|  |")  # no influence after the last state
    assert summary["peaks"] == {"speaker": 2, "word": 3} and summary["kept_layers_all_labels"] == 3
    assert "speaker: convexity peaks at hidden state 2, probe at 2" in table


def test_an_output_that_is_a_file_is_refused_before_the_scoring(tmp_path, monkeypatch):
    monkeypatch.setattr(script, "cached_score_layers", lambda *a, **k: pytest.fail("scored"))
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ValueError, match="--out .*a-file: this is a file"):
        script.main(["--out", str(tmp_path / "a-file"), "--cache", str(tmp_path / "cache")])
