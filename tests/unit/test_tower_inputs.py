"""Tower inputs: between 1 and k profile rows are padded to the bundle's k slots (issue 15: the replay
harness found the Mult-VAE ProEx tower, whose profile axis is fixed at k, failing on 2..k-1 rows)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from service.towers import profile_inputs


def _bundle(k: int, dim: int) -> Any:
    return SimpleNamespace(manifest=SimpleNamespace(profiles=SimpleNamespace(k=k, text_dim=dim)))


def test_fewer_rows_than_k_are_padded_with_masked_slots() -> None:
    rows = np.arange(6, dtype=np.float32).reshape(2, 3)
    profiles, mask = profile_inputs(_bundle(4, 3), rows)
    assert profiles.shape == (1, 4, 3) and mask.tolist() == [[1, 1, 0, 0]]
    assert np.array_equal(profiles[0, :2], rows) and not profiles[0, 2:].any()
    one, one_mask = profile_inputs(_bundle(4, 3), rows[:1])  # one row: a profile of every slot
    assert one.shape == (1, 4, 3) and one_mask.tolist() == [[1, 1, 1, 1]]
    assert all(np.array_equal(slot, rows[0]) for slot in one[0])


def test_k_rows_pass_and_more_are_cut_and_none_is_one_masked_slot() -> None:
    rows = np.ones((5, 3), np.float32)
    profiles, mask = profile_inputs(_bundle(4, 3), rows)
    assert profiles.shape == (1, 4, 3) and mask.tolist() == [[1, 1, 1, 1]]
    empty, empty_mask = profile_inputs(_bundle(4, 3), None)
    assert empty.shape == (1, 1, 3) and empty_mask.tolist() == [[0]]
