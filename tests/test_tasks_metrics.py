"""Metrics of the SUPERB tasks on strings whose error counts are known by hand."""

from __future__ import annotations

import random

import pytest
import torchaudio.functional as AF

from tasks.metrics import (
    accuracy,
    char_error_rate,
    edit_distance,
    error_rate,
    phone_error_rate,
    word_error_rate,
)


def test_word_error_rate_counts_substitutions_deletions_and_insertions():
    # one substitution (B->X) and one deletion (D) over 4 reference words
    assert word_error_rate(["A B C D"], ["A X C"]) == pytest.approx(50.0)
    # one insertion over 2 words
    assert word_error_rate(["HELLO WORLD"], ["HELLO BIG WORLD"]) == pytest.approx(50.0)
    assert word_error_rate(["SAME WORDS"], ["SAME  WORDS "]) == 0.0


def test_error_rates_are_corpus_level_not_an_average_of_utterances():
    # per utterance: 0/2 and 3/4 (mean 37.5 %); corpus level: 3/6 = 50 %
    assert word_error_rate(["a b", "c d e f"], ["a b", "c"]) == pytest.approx(50.0)


def test_char_error_rate_counts_spaces_as_characters():
    assert char_error_rate(["ab"], ["abc"]) == pytest.approx(50.0)
    # "a b" vs "ab": the missing space is one deletion out of three characters
    assert char_error_rate(["a b"], ["ab"]) == pytest.approx(100 / 3)


def test_phone_error_rate_treats_multi_character_phones_as_one_token():
    assert phone_error_rate(["ð ə tʃ"], ["ð ə t"]) == pytest.approx(100 / 3)


def test_accuracy_needs_every_slot_right():
    refs = [("bring", "shoes", "none"), ("increase", "heat", "kitchen"), ("activate", "lights", "bedroom")]
    preds = [("bring", "shoes", "none"), ("increase", "heat", "bedroom"), ("activate", "lights", "bedroom")]
    assert accuracy(refs, preds) == pytest.approx(200 / 3)


def test_edit_distance_matches_torchaudio_on_random_sequences():
    rng = random.Random(0)
    for _ in range(50):
        a = [rng.choice("abcd") for _ in range(rng.randint(0, 12))]
        b = [rng.choice("abcd") for _ in range(rng.randint(0, 12))]
        assert edit_distance(a, b) == AF.edit_distance(a, b)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        error_rate([["a"], ["b"]], [["a"]])
    with pytest.raises(ValueError, match="every reference is empty"):
        word_error_rate([""], ["a"])
    with pytest.raises(ValueError, match="empty set"):
        accuracy([], [])
