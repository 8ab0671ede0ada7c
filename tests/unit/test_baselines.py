"""EASE, item-kNN and MostPop on tiny hand-made matrices whose right answers are known, their
selection on validation Recall@20, and the evaluation protocol they share with the trained models."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from training.baselines import (
    EASE,
    BaselineOptions,
    EASETooLargeError,
    ItemKNN,
    MostPop,
    comparison_lines,
    fit_baselines,
    gap_to_ease,
)
from training.baselines.ease import ease_weights, gram_matrix
from training.data import Split
from training.evaluation import evaluate

# 4 users x 4 items: items 0 and 1 always together, item 2 with item 3 once, item 3 most popular.
X = sp.csr_matrix(
    np.array(
        [
            [1, 1, 0, 1],
            [1, 1, 0, 0],
            [0, 0, 1, 1],
            [0, 0, 0, 1],
        ],
        dtype=np.float32,
    )
)


def test_ease_matches_the_closed_form() -> None:
    lam = 2.0
    x = X.toarray().astype(np.float64)
    p = np.linalg.inv(x.T @ x + lam * np.eye(4))
    expected = np.eye(4) - p / np.diag(p)[None, :]  # B = I - P diag(1/diag(P))
    weights = ease_weights(gram_matrix(X), lam)
    assert weights.dtype == np.float32
    np.testing.assert_allclose(weights, expected, atol=1e-5)
    assert np.all(np.diag(weights) == 0.0)
    # B minimises ||X - XB||^2 + lam ||B||^2 with a zero diagonal: the gradient vanishes off the diagonal
    grad = -x.T @ (x - x @ weights) + lam * weights
    off = ~np.eye(4, dtype=bool)
    np.testing.assert_allclose(grad[off], 0.0, atol=1e-4)


def test_ease_scores_the_co_occurring_item_first() -> None:
    model = EASE(l2=0.5).fit(X)
    user = sp.csr_matrix(np.array([[1, 0, 0, 0]], dtype=np.float32))
    model.train = user  # score a new history: item 0 alone
    scores = model.score(np.array([0]))[0]
    assert np.argmax(scores[1:]) + 1 == 1  # item 1, which always comes with item 0


def test_ease_refuses_a_catalogue_above_its_limit() -> None:
    with pytest.raises(EASETooLargeError, match="5 items > 4"):
        EASE(max_items=4).fit(sp.csr_matrix((2, 5), dtype=np.float32))
    results = fit_baselines(_split(), BaselineOptions(names=("ease", "mostpop"), ease_max_items=10))
    assert "skipped" in results["ease"] and "valid" not in results["ease"]
    assert gap_to_ease(0.1, results) is None
    assert "EASE skipped" in comparison_lines("M", {"valid": {"recall@20": 0.1}}, results, ("valid",))[0]


def test_itemknn_cosine_and_neighbourhood_pruning() -> None:
    x = X.toarray()
    norms = np.sqrt(x.sum(axis=0))
    cosine = (x.T @ x) / np.outer(norms, norms)
    np.fill_diagonal(cosine, 0.0)
    full = ItemKNN(k=3).fit(X)
    assert full.similarity is not None
    np.testing.assert_allclose(full.similarity.toarray(), cosine, atol=1e-6)
    one = full.with_k(1)  # each item keeps its single most similar item
    assert one.similarity is not None
    dense = one.similarity.toarray()
    assert (dense > 0).sum(axis=1).tolist() == [1, 1, 1, 1]
    assert dense[0, 1] == pytest.approx(1.0) and dense[2, 3] == pytest.approx(cosine[2, 3])
    assert np.allclose(ItemKNN(k=1).fit(X).similarity.toarray(), dense)  # type: ignore[union-attr]
    # user 3 (item 3 only): its neighbour scores, item 3's similarities
    np.testing.assert_allclose(full.score(np.array([3]))[0], cosine[3], atol=1e-6)
    with pytest.raises(ValueError, match="at least 5"):
        full.with_k(5)


def test_mostpop_counts_interactions_once() -> None:
    doubled = X.copy()
    doubled.data[:] = 5.0  # ratings, not counts
    scores = MostPop().fit(doubled).score(np.array([0, 1]))
    assert scores.shape == (2, 4)
    assert scores[0].tolist() == [2.0, 2.0, 1.0, 3.0] and np.array_equal(scores[0], scores[1])


def _split(n_users: int = 60, n_items: int = 60, seed: int = 0) -> Split:
    """Two taste groups (items 0-29 and 30-59), each user's items from their group; random 60/20/20."""
    rng = np.random.default_rng(seed)
    parts: dict[str, tuple[list[int], list[int]]] = {p: ([], []) for p in ("train", "valid", "test")}
    half = n_items // 2
    for u in range(n_users):
        group = (u % 2) * half
        items = rng.choice(np.arange(group, group + half), size=10, replace=False)
        for part, chosen in (("train", items[:6]), ("valid", items[6:8]), ("test", items[8:])):
            parts[part][0].extend([u] * len(chosen))
            parts[part][1].extend(chosen.tolist())
    return Split.from_pairs(
        n_users, n_items, {k: (np.array(u), np.array(i)) for k, (u, i) in parts.items()}, "random"
    )


def test_baselines_under_the_shared_protocol() -> None:
    """Train items are masked, the hyperparameter is the validation-best one of the grid, and the
    collaborative baselines find the taste groups that MostPop cannot."""
    split = _split()
    options = BaselineOptions(ease_lambdas=(1.0, 10.0, 1000.0), knn_neighbours=(2, 8))
    results = fit_baselines(split, options)
    assert set(results) == {"ease", "itemknn", "mostpop"}
    for name in ("ease", "itemknn"):
        grid = results[name]["grid_valid_recall@20"]
        best = max(grid, key=grid.get)
        assert float(best) == next(iter(results[name]["params"].values()))
        assert results[name]["valid"]["recall@20"] == pytest.approx(grid[best])
        assert results[name]["test"]["recall@20"] > results["mostpop"]["test"]["recall@20"]
    # The protocol: a model that scores train items highest loses nothing, they are masked.
    model = EASE(results["ease"]["params"]["l2"]).fit(split.train)
    boosted = evaluate(lambda u: model.score(u) + 100.0 * split.train[u].toarray(), split, "test")
    assert boosted["recall@20"] == pytest.approx(results["ease"]["test"]["recall@20"])
    assert fit_baselines(split, options) == results  # cached per split fingerprint
    assert list(results["ease"]["grid_valid_recall@20"])[:3] == ["1", "10", "1000"]

    lines = comparison_lines(
        "Mult-VAE+ProEx", {"valid": {"recall@20": 0.5}, "test": {"recall@20": 0.4}}, results
    )
    assert lines[0].startswith("valid R@20: Mult-VAE+ProEx 0.5000 | EASE ")
    assert "| item-kNN " in lines[1] and "| MostPop " in lines[1]
    gap = gap_to_ease(0.5, results)
    assert gap == pytest.approx(results["ease"]["valid"]["recall@20"] - 0.5)


def test_ease_goes_past_an_edge_of_its_grid_when_the_best_sits_on_it() -> None:
    split = _split(seed=3)
    result = fit_baselines(split, BaselineOptions(names=("ease",), ease_lambdas=(64.0, 128.0)))["ease"]
    grid = {float(k): v for k, v in result["grid_valid_recall@20"].items()}
    tried = list(grid)
    assert tried[:2] == [64.0, 128.0] and 3 <= len(tried) <= 2 + 3  # past the grid, at most 3 steps
    first = max(tried[:2], key=lambda l2: grid[l2])
    assert tried[2] == (first / 2 if first == 64.0 else first * 2)  # towards the edge the best sat on
    assert result["params"]["l2"] == max(grid, key=lambda l2: grid[l2])
