"""The interface of the non-trained baselines: fit on the training matrix, score users.

A baseline is fitted on ``split.train`` (users x items, any positive value an interaction) and
``score(users)`` returns a dense ``[len(users), n_items]`` float32 array; the evaluator
(:func:`training.evaluation.evaluate`) masks the users' training items and ranks every item, exactly as
for the trained models. Baselines with a hyperparameter (EASE's L2 weight, item-kNN's neighbourhood
size) are tuned on validation Recall@20 by :func:`training.baselines.compare.fit_baselines`.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp


class Baseline(Protocol):
    name: str

    def fit(self, train: sp.csr_matrix) -> Any:
        """Learn from the training matrix; returns the fitted baseline."""

    def score(self, users: np.ndarray) -> np.ndarray:
        """Scores of every item for ``users``: ``[len(users), n_items]``."""


def binarize(train: Any) -> sp.csr_matrix:
    """The training matrix as a float32 CSR matrix of ones (duplicates and ratings collapse to 1)."""
    matrix = sp.csr_matrix(train, dtype=np.float32, copy=True)
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    matrix.eliminate_zeros()
    return matrix
