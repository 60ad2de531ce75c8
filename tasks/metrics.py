"""Scoring functions of the SUPERB tasks: WER, CER, PER and accuracy, all in percent.

Error rates are corpus-level, as in SUPERB: the edit distances of all utterances summed, divided
by the summed reference lengths (not an average of per-utterance rates). CER counts spaces as
characters, like s3prl does.
"""

from __future__ import annotations

from collections.abc import Sequence

import editdistance


def edit_distance(reference: Sequence, hypothesis: Sequence) -> int:
    """Levenshtein distance between two sequences (of characters, words or phones)."""
    return int(editdistance.eval(list(reference), list(hypothesis)))


def error_rate(references: Sequence[Sequence], hypotheses: Sequence[Sequence]) -> float:
    """Corpus-level error rate in percent: ``100 * sum(edits) / sum(len(reference))``.

    Raises:
        ValueError: the lists differ in length, or every reference is empty.
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    total = sum(len(ref) for ref in references)
    if total == 0:
        raise ValueError("error rate is undefined: every reference is empty")
    edits = sum(edit_distance(ref, hyp) for ref, hyp in zip(references, hypotheses, strict=True))
    return 100.0 * edits / total


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """WER in percent over whitespace-separated words."""
    return error_rate([r.split() for r in references], [h.split() for h in hypotheses])


def char_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """CER in percent over characters; runs of whitespace count as one space."""
    return error_rate([" ".join(r.split()) for r in references], [" ".join(h.split()) for h in hypotheses])


def phone_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """PER in percent over space-separated phones."""
    return word_error_rate(references, hypotheses)


def accuracy(references: Sequence, predictions: Sequence) -> float:
    """Percentage of predictions equal to their reference (tuples compare whole: all slots right)."""
    if len(references) != len(predictions):
        raise ValueError(f"{len(references)} references but {len(predictions)} predictions")
    if not references:
        raise ValueError("accuracy is undefined on an empty set")
    return 100.0 * sum(r == p for r, p in zip(references, predictions, strict=True)) / len(references)


def utterance_counts(metric: str, references: Sequence, hypotheses: Sequence) -> tuple[list[int], list[int]]:
    """Per utterance, the two counts whose summed ratio (x100) is the corpus-level ``metric``:
    (edits, reference length) for ``wer``/``per`` (words or phones) and ``cer`` (characters), and
    (1 if right else 0, 1) for ``accuracy``. Confidence intervals resample these (leaderboard.intervals)."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    if metric in ("wer", "per"):
        pairs = [(r.split(), h.split()) for r, h in zip(references, hypotheses, strict=True)]
    elif metric == "cer":
        pairs = [(" ".join(r.split()), " ".join(h.split())) for r, h in zip(references, hypotheses, strict=True)]
    elif metric == "accuracy":
        return [int(r == h) for r, h in zip(references, hypotheses, strict=True)], [1] * len(references)
    else:
        raise ValueError(f"no per-utterance counts for metric {metric!r}; known: wer, per, cer, accuracy")
    return [edit_distance(r, h) for r, h in pairs], [len(r) for r, _ in pairs]
