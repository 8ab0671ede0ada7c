"""Profile vectors as training input: K embedded profiles per user and per item.

They come from a profile store written by the offline jobs (``rec_contract.profile_store``), read for
the dataset's raw ids in index order. Entities the store does not cover get an all-False mask; the
models handle masks everywhere.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rec_contract.profile_store import STORE_META_FILE, read_profile_vectors
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
    counts = store_counts(folder)
    sides = {}
    for entity_type, ids in (("user", dataset.user_ids), ("item", dataset.item_ids)):
        if counts.get(entity_type, 1):  # stores without the counts are read as before
            sides[entity_type] = read_profile_vectors(folder, entity_type, [str(i) for i in ids], k=k)
    if not sides:
        raise ValueError(f"profile store {folder} holds no vectors")
    dims = {side.dim for side in sides.values()}
    if len(dims) != 1:
        raise ValueError(f"user and item profile dimensions differ in {folder}: {sorted(dims)}")
    dim, first = dims.pop(), next(iter(sides.values()))

    def side(entity_type: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        """A side the store does not hold at all (MIND: item profiles only) is all masked."""
        if entity_type in sides:
            return sides[entity_type].vectors, sides[entity_type].mask
        return np.zeros((n, k, dim), np.float32), np.zeros((n, k), bool)

    return ProfileInputs(
        *side("user", dataset.n_users),
        *side("item", dataset.n_items),
        {
            "kind": "store",
            "path": str(folder.resolve()),
            "version": first.version,
            "embedding_model": first.embedding_model,
        },
    )


def store_counts(folder: Path) -> dict[str, int]:
    """How many users and items a store holds vectors for (``store.json``; empty when absent)."""
    meta_path = folder / STORE_META_FILE
    if not meta_path.exists():
        return {}
    counts = json.loads(meta_path.read_text()).get("counts") or {}
    return {str(key): int(value) for key, value in counts.items()}


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
