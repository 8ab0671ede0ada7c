"""MostPop: every user gets the items with the most training interactions."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


class MostPop:
    name = "mostpop"

    def __init__(self) -> None:
        self.popularity: np.ndarray | None = None

    def fit(self, train: sp.csr_matrix) -> MostPop:
        counts = np.asarray(train.sum(axis=0)).ravel().astype(np.float32)
        self.popularity = counts
        return self

    def score(self, users: np.ndarray) -> np.ndarray:
        if self.popularity is None:
            raise RuntimeError("MostPop.fit must be called before score")
        return np.tile(self.popularity, (len(users), 1))
