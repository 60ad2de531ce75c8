"""Graph convexity: known answers, agreement with a per-pair reference, and the side-by-side scores."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import dijkstra

from harness.compression.convexity.graph import (
    ConvexityConfig,
    _orient_pairs,  # internals (source choice, early stop), checked below
    _PairsBySource,
    _same_class_bounds,
    graph_convexity,
    graph_convexity_per_layer,
    knn_graph,
    path_scores,
    sample_class_pairs,
)
from harness.compression.convexity.layer_scores import (
    block_influence,
    cka_per_layer,
    linear_cka,
    linear_probe_accuracy,
    linear_probe_per_layer,
)

QUIET = {"progress": False, "workers": 1}


# ---------------------------------------------------------------- a plain per-pair reference


def _reference_graph(x: np.ndarray, k: int):
    """Dense float64 distances, union kNN adjacency, and the CSR graph of edge lengths."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    dist = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    ranked = np.argsort(np.where(np.eye(n, dtype=bool), np.inf, dist), axis=1)[:, :k]
    adjacent = np.zeros((n, n), dtype=bool)
    adjacent[np.arange(n)[:, None], ranked] = True
    adjacent |= adjacent.T
    return adjacent, sp.csr_matrix(np.where(adjacent, dist, 0.0))


def _reference_pair_score(graph, adjacent, labels, i: int, j: int) -> float:
    """One Dijkstra call for the pair, then the path walked from j back to i."""
    dist, pred = dijkstra(graph, directed=False, indices=i, return_predecessors=True)
    if not np.isfinite(dist[j]):
        return 0.0
    if adjacent[i, j]:
        return 1.0
    interior = []
    node = pred[j]
    while node != i:
        interior.append(node)
        node = pred[node]
    return float(np.mean([labels[v] == labels[i] for v in interior]))


def _reference_convexity(x, labels, k):
    """Layer score over all ordered pairs of every class (classes small enough not to sample)."""
    labels = np.asarray(labels)
    adjacent, graph = _reference_graph(x, k)
    class_scores = {}
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        scores = [_reference_pair_score(graph, adjacent, labels, i, j) for i in members for j in members if i != j]
        class_scores[c.item()] = 100.0 * float(np.mean(scores))
    return float(np.mean(list(class_scores.values()))), class_scores


def _overlapping_data(separation, seed=0):
    """Three classes of 40 around centres ``separation`` x N(0, I) apart, unit noise, 8 dims."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1, 2], 40)
    x = (rng.normal(size=(3, 8)) * separation)[labels] + rng.normal(size=(120, 8))
    return x.astype(np.float32), labels


def _mixed_data(seed=0):
    """Three overlapping classes plus a far-away island (pairs with no path)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, 8)) * 1.5
    labels = np.concatenate([np.repeat([0, 1, 2], 40), rng.integers(0, 3, 15)])
    x = centres[labels] + rng.normal(size=(len(labels), 8))
    x[120:] += 200.0  # the island: its members connect only among themselves
    return x.astype(np.float32), labels


# ---------------------------------------------------------------- known answers


def test_well_separated_blobs_score_100():
    rng = np.random.default_rng(0)
    labels = np.repeat(["yes", "no", "up", "down"], 30)
    centres = {name: rng.normal(size=16) * 100 for name in np.unique(labels)}
    x = np.stack([centres[name] for name in labels]) + rng.normal(size=(len(labels), 16))
    result = graph_convexity(x, labels, ConvexityConfig(**QUIET))
    assert result.score == 100.0
    assert result.class_scores == {"down": 100.0, "no": 100.0, "up": 100.0, "yes": 100.0}
    assert result.num_pairs == {name: 30 * 29 for name in ("down", "no", "up", "yes")}


def test_interleaved_classes_score_low():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 8))
    labels = rng.integers(0, 4, 400)  # labels carry no geometry: chance is about 25 %
    interleaved = graph_convexity(x, labels, ConvexityConfig(**QUIET)).score
    clustered = graph_convexity(x + 6.0 * np.eye(8)[labels], labels, ConvexityConfig(**QUIET)).score
    assert interleaved < 40.0
    assert clustered > 95.0


def test_chain_whose_paths_leave_the_class_scores_the_exact_fraction():
    # Points on a line with growing gaps: with k=1 each point's nearest neighbour is its left
    # neighbour, so the graph is the chain 0-1-3-6-10 plus a separate pair 1000-1001.5.
    position = np.array([0.0, 1.0, 3.0, 6.0, 10.0, 1000.0, 1001.5])
    labels = ["A", "A", "B", "A", "B", "B", "B"]
    x = np.stack([position, np.zeros(7), np.zeros(7)], axis=1)
    result = graph_convexity(x, labels, ConvexityConfig(n_neighbors=1, **QUIET))
    # A = {0, 1, 3}: (0,1) adjacent -> 1; (0,3) interior {1: A, 2: B} -> 1/2; (1,3) interior {2: B} -> 0
    # B = {2, 4, 5, 6}: (2,4) interior {3: A} -> 0; (5,6) adjacent -> 1; four pairs with no path -> 0
    assert result.class_scores["A"] == pytest.approx(100 * (1 + 0.5 + 0) / 3)
    assert result.class_scores["B"] == pytest.approx(100 * 1 / 6)
    assert result.score == pytest.approx((50.0 + 100 / 6) / 2)
    assert result.num_pairs == {"A": 6, "B": 12}
    # nnconvexity's average is over all 18 pairs, so B (12 pairs) weighs twice A: (3 + 2) / 18
    assert result.pair_score == pytest.approx(100 * 5 / 18) and result.value("pairs") == result.pair_score
    assert result.value("classes") == result.score
    with pytest.raises(ValueError, match="--average 'paths'"):
        result.value("paths")


def test_single_item_classes_are_skipped_and_reported():
    x = np.array([[0.0], [1.0], [2.0], [50.0]])
    result = graph_convexity(x, [1, 1, 1, 2], ConvexityConfig(n_neighbors=1, **QUIET))
    assert result.skipped_classes == [2]
    assert list(result.class_scores) == [1]
    assert result.to_dict()["skipped_classes"] == ["2"]


# ---------------------------------------------------------------- agreement with the reference


@pytest.mark.parametrize(
    "data, k, bounded",
    [
        (_mixed_data(), 3, 0.0),  # no-path pairs: every source has a target on the island
        (_mixed_data(), 10, 0.0),
        (_overlapping_data(0.5), 10, 2 / 3),  # some classes joined inside: Dijkstra stops early
        (_overlapping_data(1.0), 10, 1.0),  # all joined inside, yet some shortest paths leave
    ],
    ids=["island-k3", "island-k10", "overlap-0.5", "overlap-1.0"],
)
def test_agrees_with_per_pair_reference(data, k, bounded):
    x, labels = data
    expected_score, expected_classes = _reference_convexity(x, labels, k)
    result = graph_convexity(x, labels, ConvexityConfig(n_neighbors=k, **QUIET))
    assert result.class_scores == pytest.approx(expected_classes, abs=1e-9)
    assert result.score == pytest.approx(expected_score, abs=1e-9)
    assert 5.0 < result.score < 95.0  # mixed paths, not a trivial case
    # Share of sources whose Dijkstra run is cut at a finite bound (the early stop is exercised).
    firsts, seconds = np.nonzero((labels[:, None] == labels[None, :]) & ~np.eye(len(labels), dtype=bool))
    sources, inverse = np.unique(firsts, return_inverse=True)
    grouped = _PairsBySource(inverse, len(sources))
    bounds = _same_class_bounds(knn_graph(x, k).to_csr(), labels, sources, grouped, seconds, 64)
    assert np.isfinite(bounds).mean() == pytest.approx(bounded, abs=0.01)


def test_path_scores_agree_with_reference_on_random_pairs():
    x, labels = _mixed_data(seed=3)
    adjacent, _ = _reference_graph(x, 5)
    knn = knn_graph(x, 5)
    rng = np.random.default_rng(0)
    sources, targets = [], []
    while len(sources) < 300:
        i, j = rng.integers(0, len(x), 2)
        if i != j and labels[i] == labels[j]:
            sources.append(i)
            targets.append(j)
    sources, targets = np.array(sources), np.array(targets)
    got = path_scores(knn.to_csr(), knn.neighbors, labels, sources, targets, source_batch=7)
    _, graph = _reference_graph(x, 5)
    expected = [_reference_pair_score(graph, adjacent, labels, i, j) for i, j in zip(sources, targets, strict=True)]
    np.testing.assert_allclose(got, expected, atol=1e-12)
    assert set(np.round(got, 6)) >= {0.0, 1.0}  # both rules exercised


def test_knn_graph_matches_brute_force():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 24)).astype(np.float32) + 50.0  # a common offset must not cost precision
    knn = knn_graph(torch.from_numpy(x), 6, device="cpu")
    dist = np.sqrt(((x[:, None, :].astype(np.float64) - x[None]) ** 2).sum(-1))
    np.fill_diagonal(dist, np.inf)
    expected = np.argsort(dist, axis=1)[:, :6]
    np.testing.assert_array_equal(np.sort(knn.neighbors, axis=1), np.sort(expected, axis=1))
    np.testing.assert_allclose(knn.distances, np.take_along_axis(dist, expected, axis=1), rtol=1e-5)


def test_union_graph_is_symmetric_and_keeps_duplicate_points():
    x = np.array([[0.0, 0.0], [0.0, 0.0], [3.0, 0.0], [9.0, 0.0]])
    knn = knn_graph(x, 1, device="cpu")
    graph = knn.to_csr()
    assert (graph != graph.T).nnz == 0
    edges = {tuple(sorted(e)) for e in zip(*graph.nonzero(), strict=True)}
    assert edges == {(0, 1), (0, 2), (2, 3)} or edges == {(0, 1), (1, 2), (2, 3)}
    assert graph[0, 1] > 0  # a zero distance is still an edge


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_knn_graph_on_gpu_matches_cpu():
    x = np.random.default_rng(0).normal(size=(2000, 64)).astype(np.float32)
    cpu, gpu = knn_graph(x, 10, device="cpu"), knn_graph(x, 10, device="cuda")
    np.testing.assert_array_equal(cpu.neighbors, gpu.neighbors)
    np.testing.assert_allclose(cpu.distances, gpu.distances, rtol=1e-4)


# ---------------------------------------------------------------- sampling, layers, workers, errors


def test_sample_class_pairs_all_or_distinct_sample():
    first, second = sample_class_pairs(5, 100, np.random.default_rng(0))
    assert sorted(zip(first, second, strict=True)) == [(i, j) for i in range(5) for j in range(5) if i != j]
    first, second = sample_class_pairs(200, 5000, np.random.default_rng(0))
    pairs = set(zip(first.tolist(), second.tolist(), strict=True))
    assert len(pairs) == 5000 and all(i != j for i, j in pairs)
    assert first.max() == 199 and second.max() == 199
    again = sample_class_pairs(200, 5000, np.random.default_rng(0))
    np.testing.assert_array_equal(first, again[0])


def test_pairs_are_solved_from_fewer_sources_without_changing_them():
    first, second = sample_class_pairs(1000, 5000, np.random.default_rng(0))
    sources, targets = _orient_pairs(first, second, 1000)
    unordered = sorted(zip(np.minimum(first, second), np.maximum(first, second), strict=True))
    assert sorted(zip(np.minimum(sources, targets), np.maximum(sources, targets), strict=True)) == unordered
    assert len(np.unique(sources)) < 0.8 * len(np.unique(first))


def test_per_layer_scores_and_sampling_are_seeded():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 90)  # 8010 ordered pairs per class: sampled
    layers = [rng.normal(size=(360, 12)) + s * np.eye(12)[labels] for s in (0.0, 3.0, 8.0)]
    config = ConvexityConfig(max_pairs_per_class=500, **QUIET)
    results = graph_convexity_per_layer(layers, labels, config)
    assert [r.num_pairs[0] for r in results] == [500, 500, 500]
    scores = [r.score for r in results]
    assert scores[0] < scores[1] < scores[2]
    assert [r.score for r in graph_convexity_per_layer(layers, labels, config)] == scores
    other_seed = ConvexityConfig(max_pairs_per_class=500, seed=1, **QUIET)
    assert graph_convexity(layers[1], labels, other_seed).score != scores[1]


def test_worker_processes_give_the_same_scores():
    x, labels = _mixed_data(seed=5)
    layers = [x, x * 2.0 + 1.0, np.random.default_rng(0).normal(size=x.shape)]
    single = graph_convexity_per_layer(layers, labels, ConvexityConfig(progress=False, workers=1))
    parallel = graph_convexity_per_layer(layers, labels, ConvexityConfig(progress=False, workers=2))
    assert [r.class_scores for r in parallel] == [r.class_scores for r in single]
    assert single[0].score == pytest.approx(single[1].score)  # scaling and shifting change nothing


@pytest.mark.parametrize(
    "layers, labels, message",
    [
        ([np.zeros((4, 2))], [0, 0, 1], "labels has 3 entries"),
        ([np.zeros(4)], [0, 0, 1, 1], "2-D"),
        ([np.zeros((4, 2)), np.zeros((5, 2))], [0, 0, 1, 1], "layers\\[1\\] has 5 rows"),
        ([np.full((4, 2), np.nan)], [0, 0, 1, 1], "NaN"),
        ([np.zeros((3, 2))], ["a", "b", "c"], "at least 2 items"),
        ([], [], "at least one layer"),
    ],
)
def test_bad_input_raises_clear_errors(layers, labels, message):
    with pytest.raises(ValueError, match=message):
        graph_convexity_per_layer(layers, labels, ConvexityConfig(**QUIET))


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="n_neighbors"):
        ConvexityConfig(n_neighbors=0)
    with pytest.raises(ValueError, match="workers"):
        ConvexityConfig(workers=0)


# ---------------------------------------------------------------- side-by-side layer scores


def test_block_influence_known_values():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(50, 8))
    orthogonal = np.stack([h[:, 1], -h[:, 0]], axis=1)  # rotate the first two dims by 90 degrees
    h2 = np.concatenate([orthogonal, np.zeros((50, 6))], axis=1)
    h1 = np.concatenate([h[:, :2], np.zeros((50, 6))], axis=1)
    assert block_influence([h, h, 3.0 * h]) == pytest.approx([0.0, 0.0], abs=1e-12)
    assert block_influence([h, -h]) == pytest.approx([2.0])
    assert block_influence([h1, h2]) == pytest.approx([1.0])
    with pytest.raises(ValueError, match="shape"):
        block_influence([h, h[:, :4]])


def test_linear_cka_invariances():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 10))
    rotation, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    assert linear_cka(x, 5.0 * x @ rotation + 3.0) == pytest.approx(1.0)
    assert linear_cka(x, rng.normal(size=(200, 10))) < 0.2
    assert cka_per_layer([x, x, rng.normal(size=(200, 4))])[0] == pytest.approx(1.0)


def test_linear_probe_separable_versus_random_labels():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 400)
    separable = rng.normal(size=(400, 16)) + 4.0 * np.eye(16)[labels]
    noise = rng.normal(size=(400, 16))
    accuracies = linear_probe_per_layer([torch.from_numpy(separable), noise], labels, seed=0)
    assert accuracies[0] > 0.95
    assert accuracies[1] < 0.45  # chance is 0.25
    assert linear_probe_accuracy(separable, labels, seed=0) == accuracies[0]
    with pytest.raises(ValueError, match="2 classes"):
        linear_probe_accuracy(noise, np.zeros(400))
