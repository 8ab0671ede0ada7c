"""MostPop: every user gets the items with the most training interactions."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from training.baselines.base import binarize


class MostPop:
    name = "mostpop"
    label = "MostPop"

    def __init__(self) -> None:
        self.popularity: np.ndarray | None = None

    def fit(self, train: sp.csr_matrix) -> MostPop:
        self.popularity = np.asarray(binarize(train).sum(axis=0)).ravel().astype(np.float32)
        return self

    def params(self) -> dict[str, float]:
        return {}

    def score(self, users: np.ndarray) -> np.ndarray:
        if self.popularity is None:
            raise RuntimeError("MostPop.fit must be called before score")
        return np.tile(self.popularity, (len(users), 1))
