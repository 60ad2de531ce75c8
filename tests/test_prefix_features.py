"""A model cut to its first layers reads its parent's cached features instead of extracting them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.records import load_records
from harness.evaluation.config import EvaluateConfig
from harness.evaluation.engine import evaluate, prefix_parent
from harness.evaluation.entries import FeatureSet, LayerPrefix
from upstreams import tiny_config
from upstreams.checkpoint import load_compact, save_compact
from upstreams.model import SpeechEncoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def teacher_and_cut(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("prefix")
    teacher = save_compact(SpeechEncoder(tiny_config("hubert")).eval(), folder / "teacher")
    model = load_compact(teacher)
    return teacher, save_compact(model.truncate(2), folder / "cut")


def _config(ckpt, corpus, cache, records, **extra) -> EvaluateConfig:
    return EvaluateConfig(upstream="pruned_hubert", ckpt=str(ckpt), tasks=["pr", "sid"], corpus=corpus, cache_dir=cache,
                          records_dir=records, max_steps=3, **extra)  # fmt: skip


def test_a_cut_reads_the_first_states_of_its_parents_features_and_scores_as_if_it_had_extracted_them(
    synth_corpus, teacher_and_cut, tmp_path
):
    teacher, cut = teacher_and_cut
    shared, own = tmp_path / "shared", tmp_path / "own"
    evaluate(_config(teacher, synth_corpus, shared, tmp_path / "teacher-records"))
    evaluate(_config(cut, synth_corpus, shared, tmp_path / "view-records", features_from=str(teacher)))
    evaluate(_config(cut, synth_corpus, own, tmp_path / "own-records"))  # its own extraction, in another cache

    viewed = {r.task.name: r for r in load_records(tmp_path / "view-records")}
    extracted = {r.task.name: r for r in load_records(tmp_path / "own-records")}
    for task in ("pr", "sid"):
        timing = viewed[task].sections["timing"]
        assert timing["extraction_s"] == 0.0 and set(timing["features_from_sha256"]) == {"train", "valid", "test"}
        assert viewed[task].upstream["num_layers"] == 3  # the cut's 2 layers + the extractor's state
        assert viewed[task].metrics["test"] == extracted[task].metrics["test"]
        assert viewed[task].upstream["ckpt_sha256"] == extracted[task].upstream["ckpt_sha256"]
    assert not extracted["pr"].sections["timing"]["features_from_sha256"]

    # the frames themselves: the parent's first three states are the cut's own, value for value
    owns = [FeatureSet(p.parent) for p in own.glob("features/*/*/features.f16")]
    parents = [FeatureSet(p.parent) for p in shared.glob("features/*/*/features.f16")]
    assert len(owns) == 3  # train, valid, test (SID averages the same frames)
    for own_entry in owns:
        parent = next(e for e in parents if e.num_layers == 5 and sorted(e.keys) == sorted(own_entry.keys))
        view = LayerPrefix(parent, 3)
        for key in own_entry.keys[:4]:
            np.testing.assert_array_equal(view.get(int(view.rows([key])[0])), own_entry.get(int(own_entry.rows([key])[0])))

def test_a_checkpoint_that_is_not_the_parents_cut_is_refused(synth_corpus, teacher_and_cut, tmp_path):
    teacher, _ = teacher_and_cut
    model = load_compact(teacher).truncate(2)
    with torch.no_grad():
        next(model.parameters()).add_(1e-3)  # a fine-tuned cut: its states are no longer the parent's
    changed = save_compact(model, tmp_path / "changed")
    with pytest.raises(ValueError, match="is not .* cut to its first layers"):
        prefix_parent(_config(changed, synth_corpus, tmp_path, tmp_path, features_from=str(teacher)), "float32")
    with pytest.raises(ValueError, match="compact checkpoint directories"):
        prefix_parent(_config(changed, synth_corpus, tmp_path, tmp_path, features_from=str(tmp_path / "nowhere")), "float32")
