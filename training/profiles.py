"""Profile vectors as training input: K embedded profiles per user and per item.

They come from a profile store written by the offline jobs (``rec_contract.profile_store``), read for
the dataset's raw ids in index order. Entities the store does not cover get an all-False mask; the
models handle masks everywhere.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rec_contract.profile_store import read_profile_vectors
from training.data import InteractionDataset


@dataclass
class ProfileInputs:
    """User and item profile vectors ``[N, K, d_s]`` (float32) with their slot masks ``[N, K]`` (bool).

    ``source`` describes where they came from (store path, version, embedding model) and goes into the
    run's ``config.json``.
    """

    user_vectors: np.ndarray
    user_mask: np.ndarray
    item_vectors: np.ndarray
    item_mask: np.ndarray
    source: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, vectors, mask in (
            ("user", self.user_vectors, self.user_mask),
            ("item", self.item_vectors, self.item_mask),
        ):
            if vectors.ndim != 3 or mask.shape != vectors.shape[:2]:
                raise ValueError(f"{name} profiles must be [N, K, d] with a [N, K] mask")
        if self.user_vectors.shape[1:] != self.item_vectors.shape[1:]:
            raise ValueError("user and item profiles must share K and d_s")
        self.user_vectors = np.ascontiguousarray(self.user_vectors, dtype=np.float32)
        self.item_vectors = np.ascontiguousarray(self.item_vectors, dtype=np.float32)
        self.user_mask = np.asarray(self.user_mask, dtype=bool)
        self.item_mask = np.asarray(self.item_mask, dtype=bool)

    @property
    def k(self) -> int:
        return int(self.user_vectors.shape[1])

    @property
    def dim(self) -> int:
        return int(self.user_vectors.shape[2])

    def fingerprint(self) -> str:
        """A content hash of the four arrays (to tell whether a store changed under a run)."""
        digest = hashlib.sha256()
        for arr in (self.user_vectors, self.user_mask, self.item_vectors, self.item_mask):
            digest.update(str(arr.shape).encode())
            digest.update(np.ascontiguousarray(arr).tobytes())
        return digest.hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        """What ``config.json`` records about these profiles."""
        return {
            **self.source,
            "k": self.k,
            "dim": self.dim,
            "user_coverage": float(self.user_mask.any(axis=1).mean()) if len(self.user_mask) else 0.0,
            "item_coverage": float(self.item_mask.any(axis=1).mean()) if len(self.item_mask) else 0.0,
            "fingerprint": self.fingerprint(),
        }

    @classmethod
    def zeros(cls, n_users: int, n_items: int, k: int, dim: int) -> ProfileInputs:
        """Placeholders of the right shapes (filled by a checkpoint's state dict when a run reloads)."""
        return cls(
            np.zeros((n_users, k, dim), np.float32),
            np.zeros((n_users, k), bool),
            np.zeros((n_items, k, dim), np.float32),
            np.zeros((n_items, k), bool),
            {"kind": "placeholder"},
        )


def load_profile_inputs(folder: str | Path, dataset: InteractionDataset, k: int) -> ProfileInputs:
    """Read the K profile vectors of every user and item of ``dataset`` from a profile store."""
    folder = Path(folder)
    users = read_profile_vectors(folder, "user", [str(u) for u in dataset.user_ids], k=k)
    items = read_profile_vectors(folder, "item", [str(i) for i in dataset.item_ids], k=k)
    if users.dim != items.dim:
        raise ValueError(f"user and item profile dimensions differ in {folder}: {users.dim} vs {items.dim}")
    return ProfileInputs(
        users.vectors,
        users.mask,
        items.vectors,
        items.mask,
        {
            "kind": "store",
            "path": str(folder.resolve()),
            "version": users.version,
            "embedding_model": users.embedding_model,
        },
    )


def synthetic_profile_inputs(
    n_users: int, n_items: int, k: int, dim: int, seed: int = 0, missing: float = 0.0
) -> ProfileInputs:
    """Random L2-normalised profile vectors for tests (``missing`` = share of slots left empty)."""
    rng = np.random.default_rng(seed)

    def block(n: int) -> tuple[np.ndarray, np.ndarray]:
        vectors = rng.standard_normal((n, k, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=-1, keepdims=True)
        mask = rng.random((n, k)) >= missing
        return vectors * mask[:, :, None], mask

    user_vectors, user_mask = block(n_users)
    item_vectors, item_mask = block(n_items)
    return ProfileInputs(
        user_vectors, user_mask, item_vectors, item_mask, {"kind": "synthetic", "seed": seed}
    )
