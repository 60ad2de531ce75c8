"""Layer scores shown beside graph convexity: linear-probe accuracy, block influence, linear CKA.

All functions take plain arrays (numpy or torch), ``[N, D]`` per layer, so they work on any
upstream's hidden states once pooled (or on frames stacked into rows).

- Linear probe: multinomial logistic regression on standardised features, trained on a seeded
  stratified split and scored on the held-out part (accuracy in [0, 1]).
- Block influence (Dorszewski et al., "How Redundant Is the Transformer Stack in Speech
  Representation Models?", ICASSP 2025): ``1 - cos(h_l, h_{l+1})`` averaged over rows; near 0
  means layer ``l + 1`` barely changes its input.
- Linear CKA (Kornblith et al. 2019) between consecutive layers, on column-centred features.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

def linear_probe_accuracy(
    features: np.ndarray | torch.Tensor,
    labels: Sequence[Hashable],
    *,
    test_fraction: float = 0.25,
    seed: int = 0,
    max_iter: int = 1000,
    regularization: float = 1.0,
) -> float:
    """Held-out accuracy of a logistic-regression probe on one layer.

    Args:
        features: ``[N, D]`` item vectors.
        labels: ``N`` class labels.
        test_fraction (float): share of items held out for scoring, in (0, 1).
        seed (int): seed of the split. The split is stratified when every class has two items
            and both parts can hold one item of every class; otherwise it is a plain random split
            (held-out items of classes unseen in training count as errors).
        max_iter (int): L-BFGS iterations.
        regularization (float): inverse L2 strength (scikit-learn's ``C``).

    Returns:
        float: accuracy in [0, 1].
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x = _as_numpy(features, "features")
    y = np.asarray(labels)
    if len(y) != len(x):
        raise ValueError(f"labels has {len(y)} entries but features has {len(x)} rows; give one label per row")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise ValueError("a linear probe needs at least 2 classes; all labels are the same")
    n_test = int(np.ceil(test_fraction * len(y)))
    stratify = y if counts.min() >= 2 and min(n_test, len(y) - n_test) >= len(classes) else None
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=n_test, random_state=seed, stratify=stratify
    )
    if len(np.unique(y_train)) < 2:
        raise ValueError("the training split holds a single class; give more items per class")
    scaler = StandardScaler().fit(x_train)
    probe = LogisticRegression(max_iter=max_iter, C=regularization)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        probe.fit(scaler.transform(x_train), y_train)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        logger.warning("linear probe did not converge in %d iterations; accuracy may be low", max_iter)
    return float(probe.score(scaler.transform(x_test), y_test))


def linear_probe_per_layer(
    layers: Sequence[np.ndarray | torch.Tensor], labels: Sequence[Hashable], **probe_kwargs
) -> list[float]:
    """``linear_probe_accuracy`` of every layer, with the same split (keyword arguments pass through)."""
    return [linear_probe_accuracy(layer, labels, **probe_kwargs) for layer in layers]


def block_influence(layers: Sequence[np.ndarray | torch.Tensor]) -> list[float]:
    """``1 - cos(h_l, h_{l+1})`` averaged over rows, for every pair of consecutive layers.

    Args:
        layers: ``L`` arrays of the same shape ``[N, D]`` (row ``i`` is the same item everywhere).

    Returns:
        list[float]: ``L - 1`` values in [0, 2]; entry ``l`` is the influence of the block that
        maps layer ``l`` to ``l + 1``. A zero row has cosine 0 with anything.
    """
    arrays = _same_shape_layers(layers)
    out = []
    for before, after in zip(arrays[:-1], arrays[1:], strict=True):
        dot = np.einsum("nd,nd->n", before, after)
        norms = np.linalg.norm(before, axis=1) * np.linalg.norm(after, axis=1)
        cosine = np.divide(dot, norms, out=np.zeros_like(dot), where=norms > 0)
        out.append(float(np.mean(1.0 - cosine)))
    return out


def linear_cka(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> float:
    """Linear centred kernel alignment of two representations of the same ``N`` items.

    Args:
        x: ``[N, D1]``; y: ``[N, D2]``.

    Returns:
        float: in [0, 1]; 1 when ``y`` is an orthogonal transform and rescaling of ``x``.
    """
    a = _as_numpy(x, "x")
    b = _as_numpy(y, "y")
    if len(a) != len(b):
        raise ValueError(f"x has {len(a)} rows but y has {len(b)}; CKA compares the same items")
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    cross = np.linalg.norm(b.T @ a) ** 2
    norm = np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b)
    return float(cross / norm) if norm > 0 else 0.0


def cka_per_layer(layers: Sequence[np.ndarray | torch.Tensor]) -> list[float]:
    """Linear CKA of every pair of consecutive layers (``L - 1`` values)."""
    arrays = [_as_numpy(layer, f"layers[{i}]") for i, layer in enumerate(layers)]
    return [linear_cka(a, b) for a, b in zip(arrays[:-1], arrays[1:], strict=True)]


def _same_shape_layers(layers) -> list[np.ndarray]:
    arrays = [_as_numpy(layer, f"layers[{i}]") for i, layer in enumerate(layers)]
    if len(arrays) < 2:
        raise ValueError(f"block influence needs at least 2 layers, got {len(arrays)}")
    for index, array in enumerate(arrays):
        if array.shape != arrays[0].shape:
            raise ValueError(
                f"layers[{index}] has shape {array.shape} but layers[0] has {arrays[0].shape}; "
                "block influence compares the same rows and dims across layers"
            )
    return arrays


def _as_numpy(features, name: str) -> np.ndarray:
    if hasattr(features, "detach"):  # torch.Tensor, without importing torch
        features = features.detach().cpu().numpy()
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D [items, dims] array, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array
