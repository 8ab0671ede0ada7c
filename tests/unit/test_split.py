from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.data.dataset import InteractionDataset
from training.data.errors import DataFormatError
from training.data.split import Split, split_dataset


def toy_dataset(counts: list[int], with_time: bool = True) -> InteractionDataset:
    users, items, stamps = [], [], []
    for u, n in enumerate(counts):
        for j in range(n):
            users.append(u)
            items.append(j)
            stamps.append(1000 * u + (n - j) if with_time else -1)  # later items are older
    n_items = max(counts)
    return InteractionDataset(
        name="toy",
        user_ids=np.array([f"u{u}" for u in range(len(counts))], dtype=object),
        item_ids=np.array([f"i{i}" for i in range(n_items)], dtype=object),
        user=np.array(users, np.int32),
        item=np.array(items, np.int32),
        timestamp=np.array(stamps, np.int64),
        items=pd.DataFrame(
            {
                "title": [f"t{i}" for i in range(n_items)],
                "categories": [[]] * n_items,
                "description": [""] * n_items,
            }
        ),
    )


def test_random_split_ratios_seed_and_min_train() -> None:
    ds = toy_dataset([10, 5, 1, 2, 3])
    a = split_dataset(ds, "random", seed=7)
    b = split_dataset(ds, "random", seed=7)
    c = split_dataset(ds, "random", seed=8)
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != c.fingerprint()
    per_user = [(a.train[u].nnz, a.valid[u].nnz, a.test[u].nnz) for u in range(5)]
    assert per_user[0] == (6, 2, 2)
    assert per_user[1] == (3, 1, 1)
    assert all(t >= 1 for t, _, _ in per_user)  # every user keeps a train item
    assert per_user[2] == (1, 0, 0)
    total = a.train + a.valid + a.test
    assert total.nnz == ds.n_interactions and total.max() == 1  # disjoint, complete


def test_temporal_split_puts_latest_in_test() -> None:
    ds = toy_dataset([10])
    s = split_dataset(ds, "temporal")
    # Item j has timestamp 10 - j: items 0 and 1 are the newest.
    assert sorted(s.test[0].indices.tolist()) == [0, 1]
    assert sorted(s.valid[0].indices.tolist()) == [2, 3]


def test_temporal_needs_timestamps() -> None:
    with pytest.raises(ValueError, match="timestamps"):
        split_dataset(toy_dataset([5], with_time=False), "temporal")


def test_bad_ratios() -> None:
    with pytest.raises(ValueError, match="ratios"):
        split_dataset(toy_dataset([5]), "random", ratios=(0.5, 0.2, 0.2))


def test_split_save_load_roundtrip(tmp_path) -> None:
    s = split_dataset(toy_dataset([10, 7, 4]), "random", seed=3)
    s.save(tmp_path / "split")
    loaded = Split.load(tmp_path / "split")
    assert loaded.fingerprint() == s.fingerprint()
    assert loaded.params["seed"] == 3


def test_split_load_detects_corruption(tmp_path) -> None:
    s = split_dataset(toy_dataset([10, 7]), "random", seed=3)
    s.save(tmp_path / "split")
    meta = tmp_path / "split" / "split.json"
    meta.write_text(meta.read_text().replace(s.fingerprint(), "0" * 16))
    with pytest.raises(DataFormatError, match="fingerprint"):
        Split.load(tmp_path / "split")


def test_dataset_save_load_roundtrip(tmp_path) -> None:
    ds = toy_dataset([4, 3])
    ds.save(tmp_path / "ds")
    loaded = InteractionDataset.load(tmp_path / "ds")
    assert loaded.fingerprint() == ds.fingerprint()
    assert loaded.items["categories"].tolist() == [[], [], [], []]
