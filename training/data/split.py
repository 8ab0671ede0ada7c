"""Train/validation/test splits, saved so that runs are reproducible.

* ``random``: per user, a seeded random ratio split (default 60/20/20 as in the papers). Counts are
  ``floor(n * ratio)`` for validation and test and the rest for training, and every user keeps at
  least one training item (test, then validation, give one back when needed).
* ``temporal``: per user, chronological: the earliest interactions train, then validation, the latest
  test, with the same counts.
* ``predefined``: the split shipped with the data (RLMRec, MIND, or a ``split`` column).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from rec_contract.atomic import atomic_directory
from training.data.dataset import InteractionDataset
from training.data.errors import DataFormatError

SplitMethod = Literal["random", "temporal", "predefined"]
PARTS = ("train", "valid", "test")


@dataclass
class Split:
    n_users: int
    n_items: int
    train: sp.csr_matrix
    valid: sp.csr_matrix
    test: sp.csr_matrix
    method: str
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_pairs(
        cls,
        n_users: int,
        n_items: int,
        parts: dict[str, tuple[np.ndarray, np.ndarray]],
        method: str,
        params: dict[str, Any] | None = None,
    ) -> Split:
        mats = {}
        for name in PARTS:
            u, i = parts[name]
            mats[name] = sp.csr_matrix((np.ones(len(u), dtype=np.float32), (u, i)), shape=(n_users, n_items))
            mats[name].sum_duplicates()
            mats[name].data[:] = 1.0
        return cls(n_users, n_items, mats["train"], mats["valid"], mats["test"], method, params or {})

    def part(self, name: str) -> sp.csr_matrix:
        if name not in PARTS:
            raise ValueError(f"unknown split part {name!r}")
        matrix: sp.csr_matrix = getattr(self, name)
        return matrix

    def pairs(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        coo = self.part(name).tocoo()
        order = np.lexsort((coo.col, coo.row))
        return coo.row[order].astype(np.int32), coo.col[order].astype(np.int32)

    def fingerprint(self) -> str:
        digest = hashlib.sha256(f"{self.n_users}x{self.n_items}".encode())
        for name in PARTS:
            u, i = self.pairs(name)
            digest.update(name.encode())
            digest.update(u.tobytes())
            digest.update(i.tobytes())
        return digest.hexdigest()[:16]

    def summary(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "params": self.params,
            "users": self.n_users,
            "items": self.n_items,
            **{f"{name}_interactions": int(self.part(name).nnz) for name in PARTS},
            "test_users": int((np.diff(self.test.indptr) > 0).sum()),
            "fingerprint": self.fingerprint(),
        }

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        with atomic_directory(folder) as tmp:
            arrays: dict[str, Any] = {}
            for name in PARTS:
                u, i = self.pairs(name)
                arrays[f"{name}_user"] = u
                arrays[f"{name}_item"] = i
            np.savez_compressed(tmp / "split.npz", **arrays)
            (tmp / "split.json").write_text(json.dumps(self.summary(), indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> Split:
        folder = Path(folder)
        meta_path = folder / "split.json"
        if not meta_path.exists():
            raise DataFormatError(folder, "not a saved split (split.json missing)")
        meta = json.loads(meta_path.read_text())
        with np.load(folder / "split.npz") as z:
            parts = {name: (z[f"{name}_user"], z[f"{name}_item"]) for name in PARTS}
        split = cls.from_pairs(meta["users"], meta["items"], parts, meta["method"], meta.get("params", {}))
        if split.fingerprint() != meta["fingerprint"]:
            raise DataFormatError(meta_path, "split fingerprint does not match its arrays (corrupted?)")
        return split


def _part_sizes(n: int, valid_ratio: float, test_ratio: float) -> tuple[int, int, int]:
    n_test = int(np.floor(n * test_ratio))
    n_valid = int(np.floor(n * valid_ratio))
    while n - n_test - n_valid < 1 and (n_test or n_valid):
        if n_test:
            n_test -= 1
        else:
            n_valid -= 1
    return n - n_valid - n_test, n_valid, n_test


def split_dataset(
    dataset: InteractionDataset,
    method: SplitMethod = "random",
    ratios: tuple[float, float, float] = (0.6, 0.2, 0.2),
    seed: int = 2024,
) -> Split:
    """Split ``dataset``. ``ratios`` are train/valid/test and must sum to 1."""
    if method == "predefined":
        if dataset.predefined_split is None:
            raise ValueError(f"dataset {dataset.name!r} ships no predefined split")
        ps = dataset.predefined_split
        return Split.from_pairs(
            dataset.n_users,
            dataset.n_items,
            {"train": ps.train, "valid": ps.valid, "test": ps.test},
            "predefined",
        )
    if len(ratios) != 3 or abs(sum(ratios) - 1.0) > 1e-6 or min(ratios) < 0 or ratios[0] <= 0:
        raise ValueError(
            f"ratios must be three non-negative numbers summing to 1 with train > 0, got {ratios}"
        )
    if method == "temporal" and (dataset.timestamp < 0).any():
        raise ValueError(
            f"dataset {dataset.name!r} has interactions without timestamps: temporal split impossible"
        )

    rng = np.random.default_rng(seed)
    _, valid_ratio, test_ratio = ratios
    order = np.argsort(dataset.user, kind="stable")
    users_sorted = dataset.user[order]
    bounds = np.flatnonzero(np.diff(users_sorted)) + 1
    groups = np.split(order, bounds)
    buckets: dict[str, list[np.ndarray]] = {name: [] for name in PARTS}
    for group in groups:
        if len(group) == 0:
            continue
        if method == "random":
            rows = rng.permutation(group)
        else:  # temporal: earliest first, ties broken by item index for determinism
            rows = group[np.lexsort((dataset.item[group], dataset.timestamp[group]))]
        n_train, n_valid, _ = _part_sizes(len(rows), valid_ratio, test_ratio)
        buckets["train"].append(rows[:n_train])
        buckets["valid"].append(rows[n_train : n_train + n_valid])
        buckets["test"].append(rows[n_train + n_valid :])
    parts = {}
    for name in PARTS:
        rows = np.concatenate(buckets[name]) if buckets[name] else np.zeros(0, dtype=np.int64)
        parts[name] = (dataset.user[rows], dataset.item[rows])
    return Split.from_pairs(
        dataset.n_users,
        dataset.n_items,
        parts,
        method,
        {"ratios": list(ratios), "seed": seed, "dataset_fingerprint": dataset.fingerprint()},
    )
