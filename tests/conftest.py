"""Shared fixtures. Real data come from the data root (``PROFILEREC_DATA_DIR`` or ``../shared/data``);
a missing data root is an error, not a skip."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.data.registry import data_root


@pytest.fixture(scope="session")
def data_dir() -> Path:
    root = data_root()
    if not (root / "movielens-100k" / "u.data").exists():
        raise RuntimeError(f"datasets not found under {root}: set PROFILEREC_DATA_DIR")
    return root


@pytest.fixture(scope="session")
def movielens(data_dir: Path):
    from training.data import load_movielens_100k

    return load_movielens_100k(data_dir / "movielens-100k")
