"""Task heads, labels and decoding: each head learns a trivially separable toy problem."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from core.registry import UnknownNameError
from tasks.asr import BiLSTM, BiLSTMHeadConfig, reverse_padded, spec_augment
from tasks.pr import LinearHeadConfig
from tasks.registry import get_task, task_names
from tasks.sid import PoolingHeadConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _fit(task, head, features, lengths, references, steps, lr):
    """Train ``head`` on the whole toy set; return its predictions afterwards (eval mode)."""
    targets = [task.encode(r) for r in references]
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    for _ in range(steps):
        head.train()
        loss = task.loss(head(features, lengths), lengths, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    head.eval()
    with torch.no_grad():
        return task.decode(head(features, lengths), lengths)


def _token_frames(sequences, vocabulary, frames_per_token=3, dim=8, noise=0.05, seed=0):
    """Each token is a run of frames with a one-hot feature, tokens separated by a silent frame."""
    generator = torch.Generator().manual_seed(seed)
    clips = []
    for tokens in sequences:
        frames = []
        for token in tokens:
            one_hot = torch.zeros(dim)
            one_hot[vocabulary.index(token)] = 1.0
            frames += [one_hot] * frames_per_token + [torch.zeros(dim)]
        clips.append(torch.stack(frames))
    lengths = torch.tensor([len(c) for c in clips])
    padded = torch.nn.utils.rnn.pad_sequence(clips, batch_first=True)
    return padded + noise * torch.randn(padded.shape, generator=generator), lengths


def test_registry_lists_the_tasks_and_rejects_typos():
    assert task_names() == ["asr", "ks", "pr", "sid", "slu"]
    with pytest.raises(UnknownNameError, match=r"Did you mean 'asr'\?.*Known tasks: asr, ks, pr, sid, slu"):
        get_task("asrr")
    with pytest.raises(ValueError, match="no preset 'huge'; known: demo, paper"):
        get_task("pr").preset("huge")


def test_paper_presets_follow_superb():
    asr = get_task("asr").preset("paper")
    assert (asr.head.hidden_size, asr.head.num_layers, asr.head.dropout, asr.train.lr) == (1024, 2, 0.2, 1e-4)
    assert get_task("pr").preset("paper").train.lr == 1e-2
    assert get_task("sid").preset("paper").train.max_train_seconds == 8.0


def test_pr_linear_head_learns_phone_sequences_with_ctc():
    task = get_task("pr")
    references = ["ð ə", "ə tʃ ð", "tʃ", "ð tʃ ə ð"]
    task.fit_labels(references)
    assert task.vocabulary == ["<blank>", "tʃ", "ð", "ə"]
    features, lengths = _token_frames([r.split() for r in references], ["ð", "ə", "tʃ"])
    torch.manual_seed(0)
    head = task.build_head(features.shape[-1], LinearHeadConfig(projector_dim=16))
    predictions = _fit(task, head, features, lengths, references, steps=300, lr=3e-2)
    assert predictions == references
    assert task.score(references, predictions) == {"per": 0.0}


def test_asr_bilstm_head_learns_characters_with_ctc():
    task = get_task("asr")
    references = task.references(__import__("pandas").DataFrame({"transcription": ["ab", "b a", "ba b"]}))
    assert references == ["AB", "B A", "BA B"]
    task.fit_labels(references)
    features, lengths = _token_frames([list(r) for r in references], ["A", "B", " "])
    torch.manual_seed(0)
    config = BiLSTMHeadConfig(proj_size=16, hidden_size=16, dropout=0.0, num_freq_masks=0, num_time_masks=0)
    head = task.build_head(features.shape[-1], config)
    predictions = _fit(task, head, features, lengths, references, steps=150, lr=2e-2)
    assert predictions == references
    assert task.score(references, predictions) == {"wer": 0.0, "cer": 0.0}


@pytest.mark.parametrize("name", ["sid", "slu"])
def test_mean_pooling_heads_learn_separable_classes(name):
    task = get_task(name)
    slots = {"sid": ["spk0", "spk1", "spk2"], "slu": ["bring ; shoes ; none", "increase ; heat ; kitchen",
                                                     "increase ; heat ; bedroom"]}[name]
    labels = [slots[i % 3] for i in range(12)]
    references = [task.parse_label(label) for label in labels]
    task.fit_labels(references)
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(5, 12, (12,), generator=generator)
    features = 0.1 * torch.randn(12, 12, 6, generator=generator)
    for i in range(12):
        features[i, : lengths[i], i % 3] += 1.0  # the class shows in one dimension of the valid frames
        features[i, lengths[i] :] = 100.0  # padding must not leak into the mean
    torch.manual_seed(0)
    head = task.build_head(6, PoolingHeadConfig(projector_dim=8))
    predictions = _fit(task, head, features, lengths, references, steps=100, lr=3e-2)
    assert predictions == references
    assert task.score(references, predictions) == {"accuracy": 100.0}


def test_slu_label_with_wrong_slot_count_names_the_slots():
    with pytest.raises(ValueError, match="expected 3 .*action ; object ; location"):
        get_task("slu").parse_label("bring ; shoes")


def test_unseen_test_label_is_scored_wrong_not_crashing():
    task = get_task("sid")
    task.fit_labels([("a",), ("b",)])
    assert task.score([("c",), ("a",)], [("a",), ("a",)]) == {"accuracy": 50.0}


def test_ctc_encode_refuses_tokens_missing_from_training_vocabulary():
    task = get_task("asr")
    task.fit_labels(["AB"])
    with pytest.raises(ValueError, match=r"\['C'\] are not in the training vocabulary"):
        task.encode("ABC")


def test_spec_augment_masks_only_inside_valid_frames():
    torch.manual_seed(0)
    features = torch.ones(3, 20, 16)
    lengths = torch.tensor([20, 10, 5])
    masked = spec_augment(features, lengths, num_freq_masks=2, freq_mask_width=4, num_time_masks=2, time_mask_width=3)
    assert masked.shape == features.shape and torch.equal(features, torch.ones(3, 20, 16))  # input untouched
    assert (masked == 0).any()
    # time masks stay inside the valid frames: a fully zero frame never lies beyond an utterance's length
    fully_zero = (masked == 0).all(dim=-1)
    for b, length in enumerate(lengths.tolist()):
        assert not fully_zero[b, length:].any()


def test_bilstm_on_padded_batch_equals_packed_bidirectional_lstm():
    torch.manual_seed(0)
    layer = BiLSTM(6, 5)
    reference = nn.LSTM(6, 5, batch_first=True, bidirectional=True)
    with torch.no_grad():  # the reference's forward and reverse weights are the two directions'
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(reference, name).copy_(getattr(layer.forward_lstm, name))
            getattr(reference, name + "_reverse").copy_(getattr(layer.backward_lstm, name))
    x, lengths = torch.randn(3, 9, 6), torch.tensor([9, 4, 7])
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    expected, _ = pad_packed_sequence(reference(packed)[0], batch_first=True, total_length=9)
    x[1, 4:] = 1e3  # padding content must not matter
    torch.testing.assert_close(layer(x, lengths), expected, atol=1e-6, rtol=1e-5)
    assert torch.equal(reverse_padded(reverse_padded(x, lengths), lengths), x)
