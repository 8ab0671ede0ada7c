"""Full-ranking Recall@K and NDCG@K, as in the LightGCN/RLMRec/ProEx papers.

Protocol:
* evaluated users are those with at least one item in the evaluated part;
* every item is ranked; the user's training items are masked (and, for the test part, the
  validation items too only when ``mask_valid=True``);
* Recall@K = hits in the top K / number of the user's held-out items;
* NDCG@K = DCG@K / IDCG@K with the ideal DCG over min(K, number of held-out items);
* the reported figure is the mean over evaluated users.

Scores are computed for a batch of users at once (``score_fn(users) -> [B, n_items]``, numpy or
torch), masked in place, and the top K found with ``torch.topk`` or ``numpy.argpartition``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from training.data.split import Split

DEFAULT_KS: tuple[int, ...] = (10, 20, 40)
ScoreFn = Callable[[np.ndarray], Any]


@dataclass
class EvalResult:
    part: str
    metrics: dict[str, float]
    n_users: int
    seconds: float
    per_user: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def __getitem__(self, key: str) -> float:
        return self.metrics[key]

    def as_dict(self) -> dict[str, Any]:
        return {"part": self.part, "users": self.n_users, "seconds": round(self.seconds, 3), **self.metrics}


def top_k(scores: Any, k: int) -> np.ndarray:
    """Indices of the k highest scores per row, best first (numpy array or torch tensor)."""
    k = min(k, scores.shape[1])
    if hasattr(scores, "topk"):  # torch tensor
        indices: np.ndarray = scores.topk(k, dim=1).indices.cpu().numpy()
        return indices
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def rank_metrics(
    ranked: np.ndarray, truth: sp.csr_matrix, ks: Sequence[int] = DEFAULT_KS
) -> dict[str, np.ndarray]:
    """Per-user Recall@K and NDCG@K from ranked item indices ``[B, >=max(ks)]`` and a truth matrix
    ``[B, n_items]`` whose rows all have at least one item."""
    n_truth = np.diff(truth.indptr).astype(np.float64)
    if (n_truth == 0).any():
        raise ValueError("every evaluated user needs at least one held-out item")
    rows = np.repeat(np.arange(ranked.shape[0]), ranked.shape[1])
    hits = np.asarray(truth[rows, ranked.ravel()]).reshape(ranked.shape) > 0
    discounts = 1.0 / np.log2(np.arange(2, ranked.shape[1] + 2))
    cum_ideal = np.cumsum(discounts)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        if k > ranked.shape[1]:
            raise ValueError(f"K={k} exceeds the {ranked.shape[1]} ranked items")
        hk = hits[:, :k]
        out[f"recall@{k}"] = hk.sum(axis=1) / n_truth
        dcg = (hk * discounts[:k]).sum(axis=1)
        ideal = cum_ideal[np.minimum(n_truth, k).astype(int) - 1]
        out[f"ndcg@{k}"] = dcg / ideal
    return out


def _mask_rows(scores: Any, mask: sp.csr_matrix) -> Any:
    coo = mask.tocoo()
    if hasattr(scores, "topk"):
        import torch

        scores[
            torch.from_numpy(coo.row.astype(np.int64)), torch.from_numpy(coo.col.astype(np.int64))
        ] = -torch.inf
    else:
        scores[coo.row, coo.col] = -np.inf
    return scores


def evaluate(
    score_fn: ScoreFn,
    split: Split,
    part: str = "test",
    ks: Sequence[int] = DEFAULT_KS,
    mask_valid: bool = False,
    batch_size: int = 2048,
    users: np.ndarray | None = None,
    keep_per_user: bool = False,
) -> EvalResult:
    """Evaluate ``score_fn`` on ``part`` ("valid" or "test") of ``split``."""
    if part not in ("valid", "test"):
        raise ValueError("part must be 'valid' or 'test'")
    started = time.perf_counter()
    truth_all = split.part(part)
    mask_all = split.train
    if part == "test" and mask_valid:
        mask_all = (split.train + split.valid).tocsr()
    candidates = np.flatnonzero(np.diff(truth_all.indptr) > 0)
    if users is not None:
        candidates = np.intersect1d(candidates, np.asarray(users))
    max_k = max(ks)
    sums = {f"{m}@{k}": 0.0 for m in ("recall", "ndcg") for k in ks}
    per_user: dict[str, list[np.ndarray]] = {key: [] for key in sums}
    for start in range(0, len(candidates), batch_size):
        batch = candidates[start : start + batch_size]
        scores = score_fn(batch)
        if scores.shape != (len(batch), split.n_items):
            raise ValueError(
                f"score_fn returned shape {tuple(scores.shape)}, expected {(len(batch), split.n_items)}"
            )
        scores = _mask_rows(scores, mask_all[batch])
        ranked = top_k(scores, max_k)
        values = rank_metrics(ranked, truth_all[batch], ks)
        for key, arr in values.items():
            sums[key] += float(arr.sum())
            if keep_per_user:
                per_user[key].append(arr)
    n = len(candidates)
    metrics = {key: (value / n if n else 0.0) for key, value in sums.items()}
    return EvalResult(
        part=part,
        metrics=metrics,
        n_users=n,
        seconds=time.perf_counter() - started,
        per_user={k: np.concatenate(v) for k, v in per_user.items() if v} if keep_per_user else {},
    )
