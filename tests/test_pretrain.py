"""HuBERT pretraining: the loss falls, a killed run resumes, the teacher loads and has a model card."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from harness import batching, training
from harness import pretrain as recipe
from upstreams.checkpoint import load_compact

SMALL = dict(
    layers=2, embed_dim=64, heads=2, ffn_dim=128, conv_channels=32, pos_conv_kernel=16, pos_conv_groups=4,
    clusters=[12, 12], feature_layer=1, kmeans_frames=5000, batch_size=4, crop_seconds=1.0, lr=2e-3,
    warmup_fraction=0.1, save_every=5, dropout=0.0,
)  # fmt: skip


def _losses(folder):
    return [json.loads(line)["loss"] for line in (folder / "log.jsonl").read_text().splitlines()]


def test_loss_falls_and_teacher_is_written(synth_corpus, tmp_path):
    out = tmp_path / "pt"
    teacher = recipe.pretrain(synth_corpus, out, "tiny", device="cpu", overrides={**SMALL, "steps": [40, 12]})
    losses = _losses(out / "iter1")
    assert len(losses) == 40
    assert np.mean(losses[-8:]) < np.mean(losses[:8]) - 0.1, losses
    model = load_compact(teacher)
    assert model.config.num_layers == 2
    hidden, _ = model(torch.randn(1, 16000))
    assert len(hidden) == 3 and hidden[0].shape == (1, 49, 64)
    card = (teacher / "MODEL_CARD.md").read_text()
    assert "harness pretrain" in card and "| 1 | 40 |" in card
    assert "1.0 x cross-entropy on unmasked frames" in card  # the tiny preset's loss
    # iteration 2's targets come from the iteration-1 model, not from MFCCs
    first = recipe._load_targets(out / "iter1" / "targets.npz")
    second = recipe._load_targets(out / "iter2" / "targets.npz")
    assert [len(x) for x in first] == [len(x) for x in second]
    assert any((a != b).any() for a, b in zip(first, second, strict=True))
    quality = json.loads((out / "iter1" / "target_quality.json").read_text())
    assert 0 < quality["nmi_phone"] <= 1 and 0 <= quality["nmi_speaker"] <= 1 and quality["frames"] > 100
    assert f"| {quality['nmi_phone']} / {quality['nmi_speaker']} |" in card
    with pytest.raises(ValueError, match="other settings"):
        recipe.pretrain(synth_corpus, out, "tiny", device="cpu", overrides={**SMALL, "steps": [41, 12]})


def test_unmasked_frames_add_their_own_loss(synth_corpus, tmp_path):
    out = tmp_path / "pt"
    recipe.pretrain(synth_corpus, out, "tiny", device="cpu", overrides={**SMALL, "steps": [30, 1], "unmasked_weight": 1.0})
    entries = [json.loads(line) for line in (out / "iter1" / "log.jsonl").read_text().splitlines()]
    unmasked = [e["unmasked_loss"] for e in entries]
    assert len(unmasked) == 30
    assert np.mean(unmasked[-6:]) < np.mean(unmasked[:6]) - 0.1, unmasked
    # with weight 0 (the paper's masked-only loss) nothing else is logged, and the trained weights differ
    plain = tmp_path / "plain"
    recipe.pretrain(synth_corpus, plain, "tiny", device="cpu", overrides={**SMALL, "steps": [30, 1], "unmasked_weight": 0.0})
    assert "unmasked_loss" not in json.loads((plain / "iter1" / "log.jsonl").read_text().splitlines()[0])
    a, b = load_compact(out / "iter1" / "model").state_dict(), load_compact(plain / "iter1" / "model").state_dict()
    assert not all(torch.equal(a[k], b[k]) for k in a)


def test_killed_run_resumes_from_last_state(synth_corpus, tmp_path, monkeypatch):
    out = tmp_path / "pt"
    overrides = {**SMALL, "steps": [12, 6]}
    real_batches = batching.crop_batches

    def killed_after_8(*args, **kwargs):
        for i, batch in enumerate(real_batches(*args, **kwargs)):
            if i == 8:
                raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(batching, "crop_batches", killed_after_8)
    with pytest.raises(KeyboardInterrupt):
        recipe.pretrain(synth_corpus, out, "tiny", device="cpu", overrides=overrides)
    state = training.load_state(out / "iter1" / "state.pt")
    assert state["step"] == 5  # saved every 5 steps; steps 6-8 are lost and redone
    monkeypatch.setattr(batching, "crop_batches", real_batches)
    recipe.pretrain(synth_corpus, out, "tiny", device="cpu", overrides=overrides)
    steps = [json.loads(line)["step"] for line in (out / "iter1" / "log.jsonl").read_text().splitlines()]
    assert steps == [*range(1, 9), *range(6, 13)]
    assert load_compact(out / "teacher").config.num_layers == 2


def test_warm_start_begins_iteration_2_from_iteration_1(synth_corpus, tmp_path):
    out = tmp_path / "pt"
    recipe.pretrain(synth_corpus, out, "tiny", device="cpu", overrides={**SMALL, "steps": [6, 1]})
    config = recipe.PretrainConfig(**{**SMALL, "steps": [6, 1]})
    first = load_compact(out / "iter1" / "model").state_dict()
    warm = recipe.initial_encoder(config, 2, out / "iter2").state_dict()
    cold = recipe.initial_encoder(dataclasses.replace(config, warm_start=False), 2, out / "iter2").state_dict()
    assert all(torch.equal(first[k], warm[k]) for k in first)
    assert not all(torch.equal(first[k], cold[k]) for k in first)


def test_span_mask_and_frames():
    mask = training.span_mask(3, 100, 0.8, 10, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert mask.shape == (3, 100) and mask.dtype == torch.bool
    assert 0.3 < mask.float().mean() < 0.9  # spans overlap, so less than 80 % is covered
    assert training.frames_for(16000) == 49 and training.frames_for(399) == 0
    features = recipe.mfcc_features(np.random.default_rng(0).standard_normal(16000).astype(np.float32))
    assert features.shape == (49, 39)  # MFCC frames line up with the encoder's frames


def test_state_files_refuse_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "state.pt"
    torch.save({"step": 1, "evil": Evil()}, path)
    with pytest.raises(ValueError, match="cannot read the training state"):
        training.load_state(path)


def test_the_base12_recipe_is_as_deep_as_hubert_base_and_its_teacher_is_stored_in_float16(synth_corpus, tmp_path):
    from safetensors import safe_open

    from upstreams.model import SpeechEncoder

    base12 = recipe.PRESETS["base12"]
    assert (base12.layers, base12.feature_layer, base12.storage_dtype) == (12, 6, "float16")
    params = SpeechEncoder(base12.encoder_config(), initialize=False).num_params()
    assert 9e6 < params and 2 * params < 25 * 2**20  # the 25 MB, in float16

    teacher = recipe.pretrain(synth_corpus, tmp_path / "pt", "base12", device="cpu",
                              overrides={**SMALL, "steps": [3, 2], "storage_dtype": "float16"})  # fmt: skip
    with safe_open(str(teacher / "model.safetensors"), framework="pt") as weights:
        dtypes = {weights.get_tensor(key).dtype for key in weights.keys()}
    assert dtypes == {torch.float16}
    model = load_compact(teacher)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    finished = load_compact(tmp_path / "pt" / "iter2" / "model")  # float32, as trained
    for name, value in finished.state_dict().items():
        assert torch.equal(model.state_dict()[name], value.to(torch.float16).to(torch.float32)), name
    hidden, _ = model(torch.randn(1, 16000))
    assert len(hidden) == 3 and torch.isfinite(hidden[-1]).all()
    assert "stored in float16 and load as float32" in (teacher / "MODEL_CARD.md").read_text()
    with pytest.raises(ValueError, match="storage_dtype 'int8'"):
        recipe.PretrainConfig(storage_dtype="int8")
    with pytest.raises(ValueError, match="feature_layer 7 is not a hidden state of a 6-layer model"):
        recipe.PretrainConfig(feature_layer=7)
