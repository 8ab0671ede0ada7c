"""What the profile jobs read: the dataset, its seeded split and the TRAINING interactions only.

User profiles are built from training interactions only (otherwise test items leak into the profiles
and the offline evaluation is invalid); item profiles may use the training interactions' users.
Ratings are not part of the canonical dataset (every rating is an implicit positive); where the raw
source has them (MovieLens-100k ``u.data``) they are read here, for the training pairs only, so the
profiles can tell liked from disliked items.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from training.data import (
    InteractionDataset,
    Split,
    data_root,
    default_split_method,
    load_dataset,
    split_dataset,
)
from training.data.split import SplitMethod

log = logging.getLogger(__name__)

_YEAR_RE = re.compile(r"\((\d{4})\)\s*$")
_DATE_YEAR_RE = re.compile(r"(\d{4})")
_MISSING_TEXT = frozenset({"", "nan", "<na>", "nat"})  # how pandas spells a missing value as text


def attribute_text(value: object) -> str | None:
    """How an attribute value reads in a profile, or None when it is missing (None, NaN, NA, empty).

    Columns change type when rows arrive without the attribute (a new user has no age, so the age
    column turns float): integral floats read as integers (``24.0`` -> ``"24"``).
    """
    if value is None or isinstance(value, (list, tuple, dict, set, np.ndarray)):
        return None
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            return None
        return str(int(value)) if float(value).is_integer() else f"{float(value):g}"
    if isinstance(value, (np.integer, np.bool_)):
        value = value.item()
    text = str(value).strip()
    return None if text.lower() in _MISSING_TEXT else text


@dataclass
class JobContext:
    dataset: InteractionDataset
    split: Split
    split_method: str
    split_seed: int
    ratings: sp.csr_matrix | None = None  # training pairs only; 0 where unknown
    _cache: dict[str, object] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ basic views
    @property
    def name(self) -> str:
        return self.dataset.name

    @cached_property
    def train(self) -> sp.csr_matrix:
        return self.split.train.tocsr()

    @cached_property
    def train_csc(self) -> sp.csc_matrix:
        return self.split.train.tocsc()

    @cached_property
    def item_popularity(self) -> np.ndarray:
        return np.asarray(self.train.sum(axis=0)).ravel().astype(np.int64)

    @cached_property
    def timestamps(self) -> sp.csr_matrix:
        """Training interaction timestamps (``-1`` stored as 0: unknown)."""
        ds = self.dataset
        ts = sp.csr_matrix(
            (np.maximum(ds.timestamp, 0).astype(np.float64), (ds.user, ds.item)),
            shape=(ds.n_users, ds.n_items),
        )
        mask = self.train.copy()
        mask.data[:] = 1.0
        return ts.multiply(mask).tocsr()

    def user_items(self, user: int) -> np.ndarray:
        row = self.train
        return row.indices[row.indptr[user] : row.indptr[user + 1]].astype(np.int64)

    def item_users(self, item: int) -> np.ndarray:
        col = self.train_csc
        return col.indices[col.indptr[item] : col.indptr[item + 1]].astype(np.int64)

    def user_rating(self, user: int, items: np.ndarray) -> np.ndarray:
        if self.ratings is None:
            return np.zeros(len(items), dtype=np.float32)
        return np.asarray(self.ratings[user, items].todense()).ravel().astype(np.float32)

    def item_ratings(self, item: int) -> np.ndarray:
        if self.ratings is None:
            return np.zeros(0, dtype=np.float32)
        csc = self._ratings_csc
        return np.asarray(csc.data[csc.indptr[item] : csc.indptr[item + 1]], dtype=np.float32)

    @cached_property
    def _ratings_csc(self) -> sp.csc_matrix:
        assert self.ratings is not None
        return self.ratings.tocsc()

    # ------------------------------------------------------------------ item text fields
    def title(self, item: int) -> str:
        value = self.dataset.items["title"].iloc[item]
        return str(value) if isinstance(value, str) and value else str(self.dataset.item_ids[item])

    def categories(self, item: int) -> list[str]:
        cats = self.dataset.items["categories"].iloc[item]
        if isinstance(cats, str):  # a row added without a list (e.g. "" from a catalogue upsert)
            return [cats] if cats.strip() else []
        if not isinstance(cats, (list, tuple, np.ndarray)):  # None or NaN
            return []
        return [str(c) for c in cats if attribute_text(c) is not None]

    def description(self, item: int) -> str:
        value = self.dataset.items["description"].iloc[item]
        return str(value) if isinstance(value, str) else ""

    def year(self, item: int) -> int | None:
        match = _YEAR_RE.search(self.title(item))
        if match:
            return int(match.group(1))
        if "release_date" in self.dataset.items.columns:
            value = self.dataset.items["release_date"].iloc[item]
            if isinstance(value, str):
                found = _DATE_YEAR_RE.search(value)
                if found:
                    return int(found.group(1))
        return None

    def extra_text(self, item: int) -> dict[str, str]:
        """Other text columns of the item table (e.g. MIND's subcategory), without the known ones."""
        skip = {"title", "categories", "description", "release_date", "external_profile"}
        out: dict[str, str] = {}
        for col in self.dataset.items.columns:
            if col in skip:
                continue
            value = self.dataset.items[col].iloc[item]
            if isinstance(value, str) and value.strip():
                out[col] = value.strip()
        return out

    def user_attributes(self, user: int) -> dict[str, str]:
        """The user's attributes as text (see :func:`attribute_text`); missing ones are left out."""
        if self.dataset.users is None:
            return {}
        row = self.dataset.users.iloc[user]
        texts = {str(k): attribute_text(v) for k, v in row.items()}
        return {k: v for k, v in texts.items() if v is not None}


def _movielens_ratings(dataset: InteractionDataset, train: sp.csr_matrix, root: Path) -> sp.csr_matrix | None:
    path = root / "movielens-100k" / "u.data"
    if not path.exists():
        return None
    users_idx = dataset.user_index()
    items_idx = dataset.item_index()
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    for line in path.read_text(encoding="latin-1").splitlines():
        parts = line.split("\t")
        if len(parts) < 3:
            continue
        u = users_idx.get(parts[0])
        i = items_idx.get(parts[1])
        if u is None or i is None:
            continue
        rows.append(u)
        cols.append(i)
        vals.append(float(parts[2]))
    ratings = sp.csr_matrix(
        (np.asarray(vals, dtype=np.float32), (np.asarray(rows), np.asarray(cols))), shape=train.shape
    )
    mask = train.copy().astype(np.float32)
    mask.data[:] = 1.0
    return ratings.multiply(mask).tocsr()


def load_context(
    dataset: str | InteractionDataset,
    split_method: str | None = None,
    seed: int = 2024,
    data_dir: str | Path | None = None,
) -> JobContext:
    """Load ``dataset`` (a name or a loaded dataset) and split it the seeded way training does."""
    ds = load_dataset(dataset, data_dir) if isinstance(dataset, str) else dataset
    method: SplitMethod = split_method or default_split_method(ds.name)  # type: ignore[assignment]
    split = split_dataset(ds, method, seed=seed)
    ratings = None
    if ds.name == "movielens-100k":
        ratings = _movielens_ratings(ds, split.train.tocsr(), data_root(data_dir))
    log.info(
        "job context",
        extra={"dataset": ds.name, "split": method, "seed": seed, "train": int(split.train.nnz)},
    )
    return JobContext(dataset=ds, split=split, split_method=method, split_seed=seed, ratings=ratings)
