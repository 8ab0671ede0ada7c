"""Real datasets through the real protocol: MostPop agrees with the published figures."""

from __future__ import annotations

import pytest

from training.baselines import MostPop
from training.data import default_split_method, load_dataset, split_dataset
from training.evaluation import evaluate

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("name", "expected_recall20", "tolerance"),
    [("movielens-100k", 0.153, 0.01), ("rlmrec-amazon-book", 0.032, 0.002)],
)
def test_mostpop_matches_published(data_dir, name: str, expected_recall20: float, tolerance: float) -> None:
    dataset = load_dataset(name, data_dir)
    split = split_dataset(dataset, default_split_method(name), seed=2024)
    result = evaluate(MostPop().fit(split.train).score, split, "test")
    assert result["recall@20"] == pytest.approx(expected_recall20, abs=tolerance)


def test_rlmrec_split_is_kept_exactly(data_dir) -> None:
    split = split_dataset(load_dataset("rlmrec-amazon-book", data_dir), "predefined")
    assert (split.n_users, split.n_items) == (11_000, 9_332)
    assert (split.train.nnz, split.valid.nnz, split.test.nnz) == (120_464, 40_290, 40_106)


def test_mind_zero_shot_items(data_dir) -> None:
    dataset = load_dataset("mind-reclm", data_dir)
    split = split_dataset(dataset, "predefined")
    train_items = set(split.train.indices.tolist())
    test_items = set(split.test.indices.tolist())
    assert len(test_items - train_items) == 1441
    assert (dataset.items["external_profile"] != "").sum() == 892
