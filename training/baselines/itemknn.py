"""Item-kNN: cosine item-item similarity over the training users, top-k neighbours per item.

``s(i, j) = |U_i & U_j| / sqrt(|U_i| |U_j|)`` (cosine of the binary item columns), ``s(i, i) = 0``.
Each item keeps its ``k`` most similar items; a user's score for item ``j`` is the sum of ``s(i, j)``
over the user's training items ``i`` that kept ``j`` (Deshpande & Karypis' item-based top-N). The
similarities are computed in blocks of items (a sparse product per block, so memory stays
``O(I x block)``) and only the top ``max(k)`` per item are kept, so several neighbourhood sizes are
tried from one pass (:meth:`ItemKNN.with_k`).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from training.baselines.base import binarize

DEFAULT_NEIGHBOURS: tuple[int, ...] = (5, 10, 20, 50, 100, 200, 400)
_BLOCK = 1024


def top_neighbours(train: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """For every item its ``k`` most cosine-similar other items, best first: ``(indices, sims)``, both
    ``[n_items, k]`` (fewer real neighbours are padded with similarity 0)."""
    x = binarize(train)
    n_items = x.shape[1]
    k = max(1, min(k, n_items - 1)) if n_items > 1 else 1
    norms = np.sqrt(np.asarray(x.sum(axis=0)).ravel()).astype(np.float32)
    inv = np.zeros_like(norms)
    np.divide(1.0, norms, out=inv, where=norms > 0)
    xn = sp.csc_matrix(x @ sp.diags(inv))
    xt = sp.csr_matrix(xn.T)
    indices = np.zeros((n_items, k), dtype=np.int64)
    sims = np.zeros((n_items, k), dtype=np.float32)
    for start in range(0, n_items, _BLOCK):
        stop = min(start + _BLOCK, n_items)
        block = np.asarray((xt[start:stop] @ xn).toarray(), dtype=np.float32)  # [b, n_items]
        block[np.arange(stop - start), np.arange(start, stop)] = -np.inf  # no self-similarity
        part = np.argpartition(-block, k - 1, axis=1)[:, :k]
        values = np.take_along_axis(block, part, axis=1)
        order = np.argsort(-values, axis=1, kind="stable")
        indices[start:stop] = np.take_along_axis(part, order, axis=1)
        sims[start:stop] = np.maximum(np.take_along_axis(values, order, axis=1), 0.0)
    return indices, sims


class ItemKNN:
    """Item-kNN with ``k`` neighbours per item; ``fit`` builds the pruned similarity matrix."""

    name = "itemknn"
    label = "item-kNN"

    def __init__(self, k: int = 100) -> None:
        if k < 1:
            raise ValueError("item-kNN needs k >= 1 neighbours")
        self.k = k
        self.similarity: sp.csr_matrix | None = None
        self.train: sp.csr_matrix | None = None
        self._neighbours: tuple[np.ndarray, np.ndarray] | None = None

    def params(self) -> dict[str, float]:
        return {"k": self.k}

    def fit(self, train: sp.csr_matrix) -> ItemKNN:
        self.train = binarize(train)
        self._neighbours = top_neighbours(self.train, self.k)
        return self._build()

    def with_k(self, k: int) -> ItemKNN:
        """The same fitted neighbourhoods cut to ``k <= self.k`` neighbours (no recomputation)."""
        if self._neighbours is None or self.train is None:
            raise RuntimeError("ItemKNN.fit must be called before with_k")
        if k > self.k:
            raise ValueError(f"with_k({k}) needs a model fitted with at least {k} neighbours")
        other = ItemKNN(k)
        other.train = self.train
        other._neighbours = (self._neighbours[0][:, :k], self._neighbours[1][:, :k])
        return other._build()

    def _build(self) -> ItemKNN:
        assert self._neighbours is not None and self.train is not None
        indices, sims = self._neighbours
        n_items = self.train.shape[1]
        rows = np.repeat(np.arange(n_items), indices.shape[1])
        self.similarity = sp.csr_matrix(
            (sims.ravel(), (rows, indices.ravel())), shape=(n_items, n_items), dtype=np.float32
        )
        self.similarity.eliminate_zeros()
        return self

    def score(self, users: np.ndarray) -> np.ndarray:
        if self.similarity is None or self.train is None:
            raise RuntimeError("ItemKNN.fit must be called before score")
        scores = (self.train[np.asarray(users)] @ self.similarity).toarray()
        return np.asarray(scores, dtype=np.float32)
