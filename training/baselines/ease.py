"""EASE (Steck, WWW 2019): a closed-form item-item linear model.

``B = argmin ||X - X B||^2 + lambda ||B||^2  s.t. diag(B) = 0`` has the closed form
``P = (X^T X + lambda I)^-1``, ``B = I - P diag(1 / diag(P))`` (so ``B_ij = -P_ij / P_jj``, ``B_jj = 0``);
a user's scores are ``x_u B``. ``P`` is computed in float32 from the Cholesky factor of the Gram matrix
(LAPACK ``potrf`` then ``potri``, in place: one ``I x I`` matrix in memory, no general inverse). The
Gram matrix is ``I x I`` dense, so EASE is refused above ``max_items`` items (default 20,000: 1.6 GB
of float32 and a cubic solve); :class:`EASETooLargeError` says so.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack

from training.baselines.base import binarize

DEFAULT_MAX_ITEMS = 20_000
DEFAULT_LAMBDAS: tuple[float, ...] = (50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0)
_BLOCK = 2048


class EASETooLargeError(ValueError):
    """The catalogue has more items than EASE's dense ``I x I`` solve is allowed to take."""


def gram_matrix(train: sp.csr_matrix) -> np.ndarray:
    """``X^T X`` of the binarised training matrix as a dense float32 array."""
    x = binarize(train)
    gram: np.ndarray = np.asarray((x.T @ x).toarray(), dtype=np.float32)
    return gram


def ease_weights(gram: np.ndarray, l2: float) -> np.ndarray:
    """EASE's ``B`` (float32, zero diagonal) from the Gram matrix ``X^T X`` and the L2 weight."""
    if l2 <= 0:
        raise ValueError("EASE's L2 weight (lambda) must be > 0")
    n = gram.shape[0]
    a = np.array(gram, dtype=np.float32, order="F", copy=True)
    a[np.diag_indices(n)] += np.float32(l2)
    factor, info = lapack.spotrf(a, lower=1, overwrite_a=1, clean=0)
    if info != 0:
        raise np.linalg.LinAlgError(f"Cholesky of X^T X + {l2} I failed (LAPACK info {info})")
    inverse, info = lapack.spotri(factor, lower=1, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"inverse from the Cholesky factor failed (LAPACK info {info})")
    # potri fills the lower triangle: mirror it in blocks (no full-size temporaries), then scale the
    # columns in place, so the peak is the Gram matrix plus this one.
    p: np.ndarray = inverse
    for start in range(0, n, _BLOCK):
        stop = min(start + _BLOCK, n)
        p[start:stop, stop:] = p[stop:, start:stop].T
        block = p[start:stop, start:stop]
        block[:] = np.tril(block) + np.tril(block, -1).T
    diag = np.diag(p).copy()
    p /= -diag[None, :]
    p[np.diag_indices(n)] = 0.0
    return p


class EASE:
    """EASE with L2 weight ``l2``; ``fit`` solves it, ``score`` is ``X[users] @ B``."""

    name = "ease"
    label = "EASE"

    def __init__(self, l2: float = 500.0, max_items: int = DEFAULT_MAX_ITEMS) -> None:
        self.l2 = l2
        self.max_items = max_items
        self.weights: np.ndarray | None = None
        self.train: sp.csr_matrix | None = None

    def params(self) -> dict[str, float]:
        return {"l2": self.l2}

    def check_size(self, n_items: int) -> None:
        if n_items > self.max_items:
            raise EASETooLargeError(
                f"EASE skipped: {n_items} items > {self.max_items} (its dense item x item solve would "
                f"need {n_items**2 * 4 / 2**30:.1f} GiB per matrix)"
            )

    def fit(self, train: sp.csr_matrix, gram: np.ndarray | None = None) -> EASE:
        """Solve for ``B``; ``gram`` (``X^T X``) can be passed in when several lambdas are tried."""
        self.check_size(train.shape[1])
        self.train = binarize(train)
        self.weights = ease_weights(gram if gram is not None else gram_matrix(self.train), self.l2)
        return self

    def score(self, users: np.ndarray) -> np.ndarray:
        if self.weights is None or self.train is None:
            raise RuntimeError("EASE.fit must be called before score")
        scores: np.ndarray = self.train[np.asarray(users)] @ self.weights
        return np.asarray(scores, dtype=np.float32)
