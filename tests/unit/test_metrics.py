"""Recall@K / NDCG@K on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from training.data.split import Split
from training.evaluation import evaluate, rank_metrics, top_k


def csr(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    data, r, c = [], [], []
    for u, items in enumerate(rows):
        for i in items:
            r.append(u)
            c.append(i)
            data.append(1.0)
    return sp.csr_matrix((data, (r, c)), shape=(len(rows), n_items), dtype=np.float32)


def test_rank_metrics_hand_computed() -> None:
    # User 0: ranked [3, 1, 4, 0], truth {1, 0}: hits at ranks 2 and 4.
    # User 1: ranked [2, 0, 1, 3], truth {2}: hit at rank 1.
    ranked = np.array([[3, 1, 4, 0], [2, 0, 1, 3]])
    truth = csr([[1, 0], [2]], 5)
    m = rank_metrics(ranked, truth, ks=(2, 4))
    assert m["recall@2"].tolist() == [0.5, 1.0]
    assert m["recall@4"].tolist() == [1.0, 1.0]
    idcg2 = 1 + 1 / math.log2(3)
    assert m["ndcg@2"][0] == pytest.approx((1 / math.log2(3)) / idcg2)
    assert m["ndcg@4"][0] == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / idcg2)
    # Ideal DCG uses min(K, |truth|) = 1 for user 1.
    assert m["ndcg@2"][1] == pytest.approx(1.0)


def test_recall_denominator_is_all_test_items_not_k() -> None:
    ranked = np.array([[0, 1]])
    truth = csr([[0, 1, 2, 3]], 5)
    m = rank_metrics(ranked, truth, ks=(2,))
    assert m["recall@2"][0] == pytest.approx(0.5)  # 2 hits / 4 test items, not / min(2, 4)
    assert m["ndcg@2"][0] == pytest.approx(1.0)  # ideal over min(2, 4) = 2 positions


def test_top_k_numpy_and_torch_agree() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((7, 50)).astype(np.float32)
    np.testing.assert_array_equal(top_k(scores, 10), top_k(torch.from_numpy(scores), 10))


def make_split(train: list[list[int]], valid: list[list[int]], test: list[list[int]], n_items: int) -> Split:
    def pairs(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        m = csr(rows, n_items).tocoo()
        return m.row.astype(np.int32), m.col.astype(np.int32)

    return Split.from_pairs(
        len(train), n_items, {"train": pairs(train), "valid": pairs(valid), "test": pairs(test)}, "manual"
    )


def test_evaluate_masks_train_only_and_skips_users_without_test() -> None:
    # 3 users, 5 items. User 2 has no test item: not evaluated.
    split = make_split(train=[[0], [1], [2]], valid=[[1], [0], []], test=[[2], [3], []], n_items=5)
    # Scores rank item 0 first, then 1, 2, 3, 4.
    fixed = np.array([5.0, 4.0, 3.0, 2.0, 1.0], dtype=np.float32)

    def score(users: np.ndarray) -> np.ndarray:
        return np.tile(fixed, (len(users), 1))

    res = evaluate(score, split, "test", ks=(1, 2))
    assert res.n_users == 2
    # User 0: train {0} masked -> ranking 1,2,3,4 -> test item 2 at rank 2. Validation item 1 NOT masked.
    # User 1: train {1} masked -> ranking 0,2,3,4 -> test item 3 at rank 3 (outside K=2).
    assert res["recall@1"] == pytest.approx(0.0)
    assert res["recall@2"] == pytest.approx(0.5)
    # Masking validation items moves user 0's test item to rank 1 and user 1's to rank 2.
    res_masked = evaluate(score, split, "test", ks=(1, 2), mask_valid=True)
    assert res_masked["recall@1"] == pytest.approx(0.5)
    assert res_masked["recall@2"] == pytest.approx(1.0)


def test_evaluate_batches_do_not_change_results() -> None:
    rng = np.random.default_rng(1)
    n_users, n_items = 40, 30
    rows = [sorted(rng.choice(n_items, size=6, replace=False).tolist()) for _ in range(n_users)]
    split = make_split([r[:3] for r in rows], [r[3:4] for r in rows], [r[4:] for r in rows], n_items)
    table = rng.standard_normal((n_users, n_items)).astype(np.float32)
    a = evaluate(lambda u: table[u].copy(), split, "test", ks=(5, 10), batch_size=7)
    b = evaluate(lambda u: table[u].copy(), split, "test", ks=(5, 10), batch_size=1000)
    assert a.metrics == pytest.approx(b.metrics)


def test_evaluate_rejects_wrong_score_shape() -> None:
    split = make_split([[0]], [[]], [[1]], 3)
    with pytest.raises(ValueError, match="shape"):
        evaluate(lambda u: np.zeros((len(u), 2)), split, "test", ks=(1,))
