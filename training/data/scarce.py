"""Scarce-data variants of a dataset and its split, for the cold-start and sparsity measurements.

* :func:`subsample_train`: keep a seeded share of each user's training interactions (at least one per
  user), validation and test unchanged - the sparsity curve;
* :func:`hold_out_items`: remove a seeded share of the items entirely (every interaction with them),
  returning the remaining catalogue as its own dataset and the removed items' interactions - the
  new-item measurement (the removed items enter later through the item-upsert path, by text only).

Both are deterministic functions of their inputs and seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp

from training.data.dataset import InteractionDataset
from training.data.split import Split


def subsample_train(split: Split, fraction: float, seed: int) -> Split:
    """``split`` with each user's training interactions cut to ``ceil(fraction * n)`` (at least 1),
    chosen uniformly at random with ``seed``; validation and test are unchanged."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return split
    rng = np.random.default_rng(seed)
    train = split.train.tocsr()
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    for user in range(split.n_users):
        items = train.indices[train.indptr[user] : train.indptr[user + 1]]
        if not len(items):
            continue
        keep = max(1, math.ceil(fraction * len(items)))
        chosen = np.sort(rng.choice(items, size=keep, replace=False))
        rows.append(np.full(keep, user, np.int64))
        cols.append(chosen.astype(np.int64))
    u = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    i = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    sub = sp.csr_matrix((np.ones(len(u), np.float32), (u, i)), shape=train.shape)
    params = {**split.params, "train_fraction": fraction, "subsample_seed": seed}
    return replace(split, train=sub, params=params)


@dataclass
class HeldOutItems:
    """A catalogue without its held-out items, and what the held-out items were."""

    kept: InteractionDataset  # the remaining items and their interactions (same users, same order)
    item_ids: list[str]  # the held-out items' raw ids, in the original item order
    kept_items: np.ndarray  # original item index of each kept item (kept's item order)
    held_items: np.ndarray  # original item index of each held-out item
    user: np.ndarray  # the held-out items' interactions: user index (same in both datasets)
    item: np.ndarray  # ... and the held-out item's position in ``item_ids``

    def truth(self) -> sp.csr_matrix:
        """``[users, held-out items]``: who interacted with which held-out item."""
        n_users, n_held = self.kept.n_users, len(self.item_ids)
        data = np.ones(len(self.user), np.float32)
        matrix = sp.csr_matrix((data, (self.user, self.item)), shape=(n_users, n_held))
        matrix.sum_duplicates()
        matrix.data[:] = 1.0
        return matrix


def hold_out_items(dataset: InteractionDataset, fraction: float, seed: int) -> HeldOutItems:
    """Remove a seeded ``round(fraction * items)`` of ``dataset``'s items (with every interaction of
    theirs). The users stay (indices unchanged, a user may be left with no interactions)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    n_held = max(1, round(fraction * dataset.n_items))
    held = np.sort(rng.choice(dataset.n_items, size=n_held, replace=False))
    is_held = np.zeros(dataset.n_items, bool)
    is_held[held] = True
    kept_items = np.flatnonzero(~is_held)
    new_index = np.full(dataset.n_items, -1, np.int64)
    new_index[kept_items] = np.arange(len(kept_items))
    held_index = np.full(dataset.n_items, -1, np.int64)
    held_index[held] = np.arange(len(held))
    on_held = is_held[dataset.item]
    kept = replace(
        dataset,
        name=f"{dataset.name}-without-{len(held)}-items-seed{seed}",
        item_ids=dataset.item_ids[kept_items],
        user=dataset.user[~on_held],
        item=new_index[dataset.item[~on_held]].astype(np.int32),
        timestamp=dataset.timestamp[~on_held],
        items=dataset.items.iloc[kept_items].reset_index(drop=True),
        predefined_split=None,
        report={**dataset.report, "held_out_items": {"fraction": fraction, "seed": seed, "n": len(held)}},
    )
    kept.validate()
    return HeldOutItems(
        kept=kept,
        item_ids=[str(i) for i in dataset.item_ids[held]],
        kept_items=kept_items,
        held_items=held,
        user=dataset.user[on_held].astype(np.int64),
        item=held_index[dataset.item[on_held]],
    )
