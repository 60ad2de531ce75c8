"""Convexity layer pruning as a compression method: curves -> kept layers -> compact checkpoint."""

from __future__ import annotations

import json

import pytest
import torch
from convexity_fakes import fake_result  # tests/convexity_fakes.py

from harness.cli import main as harness_main
from harness.compression.convexity import method as convexity
from upstreams import load_upstream, tiny_config
from upstreams.checkpoint import load_compact, save_compact
from upstreams.model import SpeechEncoder


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    torch.manual_seed(0)
    model = SpeechEncoder(tiny_config("hubert")).eval()
    return save_compact(model, tmp_path_factory.mktemp("teacher") / "tiny")


def test_segments_per_label_type(synth_corpus):
    words = convexity.labelled_segments(synth_corpus, "word", max_points=1000, seed=0)
    assert words and all(s.start is not None and s.end > s.start for s in words)
    speakers = convexity.labelled_segments(synth_corpus, "speaker", max_points=40, seed=0)
    assert len({s.label for s in speakers}) == 8 and len(speakers) <= 40
    phones = convexity.labelled_segments(synth_corpus, "phone", max_points=300, seed=0)
    per_class = max(sum(s.label == p for s in phones) for p in {s.label for s in phones})
    assert per_class <= -(-300 // len({s.label for s in phones}))  # balanced: at most ceil(300 / classes)
    with pytest.raises(ValueError, match="unknown label type"):
        convexity.labelled_segments(synth_corpus, "emotion", 10, 0)


def test_frame_span_never_empty():
    assert convexity._frame_span(convexity.Segment("x", "a", 0.101, 0.101), 50) == (5, 6)
    assert convexity._frame_span(convexity.Segment("x", "a", 0.0, 0.5), 10) == (0, 10)
    assert convexity._frame_span(convexity.Segment("x", "a"), 7) == (0, 7)


def test_compress_keeps_layers_up_to_the_peak(synth_corpus, teacher, tmp_path, monkeypatch):
    peak_at = {"word": 2, "speaker": 1}  # hidden state where each constructed curve peaks (mean over classes)
    pairs_peak_at = {"word": 3, "speaker": 1}  # ... and the mean over pairs (nnconvexity's)

    def fake_scores(layers, labels, config):
        label_type = "speaker" if len(set(labels)) == 8 else "word"
        return [fake_result(100.0 - 10 * abs(i - peak_at[label_type]), 90.0 - 10 * abs(i - pairs_peak_at[label_type]))
                for i in range(len(layers))]  # fmt: skip

    monkeypatch.setattr(convexity, "graph_convexity_per_layer", fake_scores)
    out = convexity.compress_convexity(str(teacher), tmp_path / "cvx", corpus=synth_corpus, labels="word,speaker",
                                       max_points=60)  # fmt: skip
    model = load_compact(out)
    assert model.config.num_layers == 2  # the deepest peak over both label types
    info = json.loads((out / "convexity.json").read_text())
    assert info["kept_layers"] == 2 and len(info["word"]) == 5 and info["selection"]["decided_by"] == "word"
    assert len(info["linear_probe"]["speaker"]) == 5 and len(info["block_influence"]["word"]) == 4
    assert (out / "convexity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # both averages are reported; the rule used the mean over classes
    assert info["average"] == "classes" and info["by_average"]["classes"]["word"] == info["word"]
    assert info["by_average"]["pairs"]["word"][3] == 90.0
    pairs = convexity.compress_convexity(str(teacher), tmp_path / "pairs", corpus=synth_corpus, labels="word,speaker",
                                         max_points=60, average="pairs")  # fmt: skip
    assert load_compact(pairs).config.num_layers == 3  # the authors' definition, selected, moves the cut
    assert json.loads((pairs / "config.json").read_text())["metadata"]["compression"]["average"] == "pairs"
    meta = json.loads((out / "config.json").read_text())["metadata"]["compression"]
    assert meta["method"] == "convexity" and meta["kept_layers"] == 2 and 0 < meta["sparsity"] < 1
    # the truncated model computes exactly the teacher's first layers
    full = load_upstream(str(teacher)).eval()
    wav = torch.randn(1, 16000)
    with torch.no_grad():
        expected, _ = full(wav)
        got, _ = model(wav)
    assert len(got) == 3
    torch.testing.assert_close(got[2], expected[2], atol=1e-5, rtol=1e-5)


def test_every_depth_is_written_with_the_rules_pick_marked(synth_corpus, teacher, tmp_path, monkeypatch):
    from harness.compression.registry import METHODS, finished_checkpoints

    def fake_scores(layers, labels, config):  # peaks at hidden state 2: the rule keeps 2 layers
        return [fake_result(100.0 - 10 * abs(i - 2)) for i in range(len(layers))]

    monkeypatch.setattr(convexity, "graph_convexity_per_layer", fake_scores)
    out = convexity.compress_convexity(str(teacher), tmp_path / "cvx", corpus=synth_corpus, labels="speaker",
                                       max_points=40, depths="all")  # fmt: skip
    folders = finished_checkpoints(out)
    assert [f.name for f in folders] == ["layers-1", "layers-2", "layers-3"]
    metas = [json.loads((f / "config.json").read_text())["metadata"]["compression"] for f in folders]
    assert [m["kept_layers"] for m in metas] == [1, 2, 3] and [m["selected"] for m in metas] == [False, True, False]
    assert [load_compact(f).config.num_layers for f in folders] == [1, 2, 3]
    # the sizes the method declares to the registry are the sizes it writes
    declared = METHODS.get("convexity").sweep_sparsities(str(teacher))
    assert declared == pytest.approx([m["sparsity"] for m in metas], abs=1e-4)
    assert (out / "convexity.json").is_file() and finished_checkpoints(tmp_path / "nothing") is None
    with pytest.raises(ValueError, match="--depths rule"):
        convexity.compress_convexity(str(teacher), tmp_path / "x", corpus=synth_corpus, depths="all", finetune="sid")


def test_the_teachers_scores_are_kept_and_read_back_not_scored_again(synth_corpus, teacher, tmp_path, monkeypatch):
    scored = []

    def fake_scores(layers, labels, config):
        scored.append(len(layers))
        return [fake_result(100.0 - 10 * abs(i - 2)) for i in range(len(layers))]

    monkeypatch.setattr(convexity, "graph_convexity_per_layer", fake_scores)
    cache = tmp_path / "cache"
    first = convexity.compress_convexity(str(teacher), tmp_path / "a", corpus=synth_corpus, labels="speaker",
                                         max_points=40, depths="all", scores_cache=cache)  # fmt: skip
    assert len(scored) == 1 and len(list(cache.glob("*.json"))) == 1
    second = convexity.compress_convexity(str(teacher), tmp_path / "b", corpus=synth_corpus, labels="speaker",
                                          max_points=40, depths="all", scores_cache=cache)  # fmt: skip
    assert len(scored) == 1  # read back
    a, b = (json.loads((out / "convexity.json").read_text()) for out in (first, second))
    assert a["speaker"] == b["speaker"] and a["linear_probe"] == b["linear_probe"] and a["kept_layers"] == b["kept_layers"]
    model = load_upstream(str(teacher))
    # without probes (the hybrid's request) the entry serves too; other points, labels or teacher score anew
    without = convexity.cached_score_layers(str(teacher), model, synth_corpus, ("speaker",), 40, 0, torch.device("cpu"),
                                            probes=False, cache=cache)  # fmt: skip
    assert len(scored) == 1 and without.curves["speaker"] == a["speaker"] and without.probes == {}
    convexity.cached_score_layers(str(teacher), model, synth_corpus, ("speaker",), 30, 0, torch.device("cpu"), cache=cache)
    assert len(scored) == 2
    torch.manual_seed(1)
    other = save_compact(SpeechEncoder(tiny_config("hubert")).eval(), tmp_path / "other")
    convexity.compress_convexity(str(other), tmp_path / "c", corpus=synth_corpus, labels="speaker", max_points=40,
                                 scores_cache=cache)  # fmt: skip
    assert len(scored) == 3 and len(list(cache.glob("*.json"))) == 3
    # an entry that cannot be read is scored again, and rewritten
    for entry in cache.glob("*.json"):
        entry.write_text("{not json")
    convexity.compress_convexity(str(teacher), tmp_path / "d", corpus=synth_corpus, labels="speaker", max_points=40,
                                 scores_cache=cache)  # fmt: skip
    assert len(scored) == 4


def test_cli_runs_real_scores(synth_corpus, teacher, tmp_path):
    code = harness_main(["compress", "--method", "convexity", "--teacher", str(teacher), "--corpus", str(synth_corpus),
                         "--labels", "speaker", "--rule", "plateau", "--max-points", "40", "--out", str(tmp_path / "c"),
                         "--cache", str(tmp_path / "cache")])  # fmt: skip
    assert code == 0
    info = json.loads((tmp_path / "c" / "convexity.json").read_text())
    assert all(0 <= s <= 100 for s in info["speaker"]) and 1 <= info["kept_layers"] <= 4
    assert harness_main(["compress", "--method", "convexty", "--out", str(tmp_path / "d")]) == 2  # did you mean


def test_the_curves_travel_in_each_checkpoint_into_its_records_and_the_leaderboard(synth_corpus, teacher, tmp_path, monkeypatch):
    from core.records import load_record, write_record
    from harness.compression.convexity.curves import METADATA_KEY, read_curves_file
    from harness.compression.registry import finished_checkpoints
    from harness.evaluation.provenance import build_record, checkpoint_provenance
    from leaderboard.aggregate import build_leaderboard
    from upstreams.identity import checkpoint_hash

    def fake_scores(layers, labels, config):  # peaks at hidden state 2
        return [fake_result(100.0 - 10 * abs(i - 2)) for i in range(len(layers))]

    monkeypatch.setattr(convexity, "graph_convexity_per_layer", fake_scores)
    out = convexity.compress_convexity(str(teacher), tmp_path / "cvx", corpus=synth_corpus, labels="speaker",
                                       max_points=40, depths="all")  # fmt: skip
    curves = read_curves_file(out).curves
    assert curves == {"speaker": [pytest.approx(100.0 - 10 * abs(i - 2)) for i in range(5)]}  # 5 hidden states
    folder = finished_checkpoints(out)[1]
    hash_before = checkpoint_hash(folder)
    carried = checkpoint_provenance(str(folder))["compression"][METADATA_KEY]
    assert carried == curves and checkpoint_hash(folder) == hash_before  # notes are not the model's identity
    record = build_record(task={"name": "sid", "metrics": ["accuracy"], "main_metric": "accuracy", "higher_is_better": True},
                          metrics={"test": {"accuracy": 50.0}}, upstream={"name": "pruned_hubert", "ckpt": str(folder),
                          **checkpoint_provenance(str(folder))}, corpus={"name": "synth"}, config={"preset": "demo"},
                          seeds={"train": 0}, timing={}, device={})  # fmt: skip
    path = write_record(record, tmp_path / "records")
    (out / "convexity.json").unlink()  # the leaderboard reads the record, not the run folder
    (table,) = build_leaderboard([load_record(path)])
    (found,) = table.convexity
    assert found.curves == curves and found.path == path
