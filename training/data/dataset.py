"""The canonical form every loader produces.

An :class:`InteractionDataset` holds

* interactions as parallel arrays of dense indices ``user``, ``item`` (int32) and ``timestamp``
  (int64 seconds, ``-1`` where the source has none), one row per distinct (user, item) pair;
* the id maps raw <-> index (``user_ids[u]`` is the raw id of user index ``u``);
* an item table (``title``, ``categories``, ``description`` plus any extra text columns);
* an optional user-attribute table;
* an optional predefined split, for datasets that ship one (RLMRec, MIND).

It saves to and loads from one folder (Parquet tables plus a JSON header) so that offline jobs,
training and the export step all read the same thing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from rec_contract.atomic import atomic_directory, atomic_write_text
from training.data.errors import DataFormatError

ITEM_TEXT_COLUMNS = ("title", "categories", "description")
FORMAT_VERSION = 1


@dataclass
class PredefinedSplit:
    """Index pairs of a split that came with the data. ``valid`` may be empty."""

    train: tuple[np.ndarray, np.ndarray]
    valid: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]


@dataclass
class InteractionDataset:
    name: str
    user_ids: np.ndarray  # raw ids as str, index = dense user index
    item_ids: np.ndarray  # raw ids as str, index = dense item index
    user: np.ndarray  # int32 dense user index per interaction
    item: np.ndarray  # int32 dense item index per interaction
    timestamp: np.ndarray  # int64, -1 when unknown
    items: pd.DataFrame  # one row per item index: title, categories (list[str]), description, ...
    users: pd.DataFrame | None = None  # one row per user index: attributes
    predefined_split: PredefinedSplit | None = None
    report: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ shape and lookups
    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_interactions(self) -> int:
        return len(self.user)

    def interaction_matrix(self) -> sp.csr_matrix:
        data = np.ones(len(self.user), dtype=np.float32)
        return sp.csr_matrix((data, (self.user, self.item)), shape=(self.n_users, self.n_items))

    def user_index(self) -> dict[str, int]:
        return {str(raw): idx for idx, raw in enumerate(self.user_ids)}

    def item_index(self) -> dict[str, int]:
        return {str(raw): idx for idx, raw in enumerate(self.item_ids)}

    def item_text(self, item: int) -> str:
        """One line describing an item: ``Title (Genre1, Genre2): description``."""
        row = self.items.iloc[item]
        title = str(row.get("title") or self.item_ids[item])
        cats = row.get("categories")
        cat_text = f" ({', '.join(cats)})" if cats is not None and len(cats) else ""
        desc = row.get("description")
        desc_text = f": {desc}" if isinstance(desc, str) and desc else ""
        return f"{title}{cat_text}{desc_text}"

    def fingerprint(self) -> str:
        """A content hash of interactions and id maps (not of item text)."""
        digest = hashlib.sha256()
        digest.update(self.name.encode())
        for arr in (self.user, self.item, self.timestamp):
            digest.update(np.ascontiguousarray(arr).tobytes())
        digest.update("\x1f".join(map(str, self.user_ids)).encode())
        digest.update("\x1f".join(map(str, self.item_ids)).encode())
        return digest.hexdigest()[:16]

    def validate(self) -> None:
        """Cheap invariants every loader must satisfy."""
        n = len(self.user)
        if len(self.item) != n or len(self.timestamp) != n:
            raise ValueError("interaction arrays differ in length")
        if n and (self.user.min() < 0 or self.user.max() >= self.n_users):
            raise ValueError("user index out of range")
        if n and (self.item.min() < 0 or self.item.max() >= self.n_items):
            raise ValueError("item index out of range")
        if len(self.items) != self.n_items:
            raise ValueError(f"item table has {len(self.items)} rows for {self.n_items} items")
        for col in ITEM_TEXT_COLUMNS:
            if col not in self.items.columns:
                raise ValueError(f"item table lacks column {col!r}")
        if self.users is not None and len(self.users) != self.n_users:
            raise ValueError(f"user table has {len(self.users)} rows for {self.n_users} users")

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": self.n_interactions,
            "density": self.n_interactions / max(1, self.n_users * self.n_items),
            "has_timestamps": bool(len(self.timestamp) and (self.timestamp >= 0).all()),
            "has_user_attributes": self.users is not None,
            "predefined_split": self.predefined_split is not None,
            "fingerprint": self.fingerprint(),
        }

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | Path) -> Path:
        """Write the dataset to ``folder`` atomically (a temporary sibling renamed into place)."""
        folder = Path(folder)
        with atomic_directory(folder) as tmp:
            pd.DataFrame({"user": self.user, "item": self.item, "timestamp": self.timestamp}).to_parquet(
                tmp / "interactions.parquet", index=False
            )
            items = self.items.copy()
            items.insert(0, "item_id", self.item_ids.astype(str))
            items.to_parquet(tmp / "items.parquet", index=False)
            users = self.users.copy() if self.users is not None else pd.DataFrame(index=range(self.n_users))
            users.insert(0, "user_id", self.user_ids.astype(str))
            users.to_parquet(tmp / "users.parquet", index=False)
            if self.predefined_split is not None:
                parts: dict[str, Any] = {}
                for part in ("train", "valid", "test"):
                    u, i = getattr(self.predefined_split, part)
                    parts[f"{part}_user"] = u
                    parts[f"{part}_item"] = i
                np.savez_compressed(tmp / "predefined_split.npz", **parts)
            header = {
                "format_version": FORMAT_VERSION,
                "name": self.name,
                "has_user_attributes": self.users is not None,
                "summary": self.summary(),
                "report": self.report,
            }
            atomic_write_text(tmp / "dataset.json", json.dumps(header, indent=2, default=str))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> InteractionDataset:
        folder = Path(folder)
        header_path = folder / "dataset.json"
        if not header_path.exists():
            raise DataFormatError(folder, "not a saved dataset (dataset.json missing)")
        header = json.loads(header_path.read_text())
        if header.get("format_version") != FORMAT_VERSION:
            raise DataFormatError(header_path, f"unsupported format_version {header.get('format_version')}")
        inter = pd.read_parquet(folder / "interactions.parquet")
        items = pd.read_parquet(folder / "items.parquet")
        users = pd.read_parquet(folder / "users.parquet")
        items["categories"] = items["categories"].map(lambda v: [str(x) for x in v] if v is not None else [])
        split = None
        if (folder / "predefined_split.npz").exists():
            with np.load(folder / "predefined_split.npz") as z:
                split = PredefinedSplit(
                    *(
                        (z[f"{part}_user"].astype(np.int32), z[f"{part}_item"].astype(np.int32))
                        for part in ("train", "valid", "test")
                    )
                )
        item_ids = items.pop("item_id").to_numpy(dtype=object)
        user_ids = users.pop("user_id").to_numpy(dtype=object)
        dataset = cls(
            name=header["name"],
            user_ids=user_ids,
            item_ids=item_ids,
            user=inter["user"].to_numpy(np.int32),
            item=inter["item"].to_numpy(np.int32),
            timestamp=inter["timestamp"].to_numpy(np.int64),
            items=items.reset_index(drop=True),
            users=users.reset_index(drop=True) if header.get("has_user_attributes") else None,
            predefined_split=split,
            report=header.get("report", {}),
        )
        dataset.validate()
        return dataset


def build_index(raw_ids: list[str] | np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    """Dense index for raw ids in first-seen order."""
    mapping: dict[str, int] = {}
    for raw in raw_ids:
        key = str(raw)
        if key not in mapping:
            mapping[key] = len(mapping)
    return np.array(list(mapping), dtype=object), mapping


def deduplicate_pairs(
    user: np.ndarray, item: np.ndarray, timestamp: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Keep one row per (user, item): the earliest timestamp. Returns the count of rows merged."""
    order = np.lexsort((timestamp, item, user))
    user, item, timestamp = user[order], item[order], timestamp[order]
    keep = np.ones(len(user), dtype=bool)
    keep[1:] = (user[1:] != user[:-1]) | (item[1:] != item[:-1])
    merged = int((~keep).sum())
    return user[keep], item[keep], timestamp[keep], merged
