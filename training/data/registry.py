"""Named datasets and where their files live.

The data root is configurable (``PROFILEREC_DATA_DIR``, default ``../shared/data`` relative to the
working directory, which is where CI and development machines keep them); nothing is copied into
the repository.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from training.data.dataset import InteractionDataset
from training.data.errors import DataFormatError
from training.data.mind import load_mind
from training.data.movielens import load_movielens_100k
from training.data.rlmrec import load_rlmrec_split
from training.data.split import SplitMethod

DEFAULT_DATA_DIR = "../shared/data"

# name -> (sub-folder, loader, split method the papers use on it)
KNOWN_DATASETS: dict[str, tuple[str, Callable[[Path], InteractionDataset], SplitMethod]] = {
    "movielens-100k": ("movielens-100k", load_movielens_100k, "random"),
    "rlmrec-amazon-book": ("rlmrec-amazon-book", load_rlmrec_split, "predefined"),
    "mind-reclm": ("mind-reclm", load_mind, "predefined"),
}


def data_root(explicit: str | Path | None = None) -> Path:
    return Path(explicit or os.environ.get("PROFILEREC_DATA_DIR") or DEFAULT_DATA_DIR).expanduser().resolve()


def default_split_method(name: str) -> SplitMethod:
    if name not in KNOWN_DATASETS:
        return "random"
    return KNOWN_DATASETS[name][2]


def load_dataset(name: str, data_dir: str | Path | None = None) -> InteractionDataset:
    """Load a named dataset from the data root, or a saved canonical dataset folder by path."""
    if name in KNOWN_DATASETS:
        sub, loader, _ = KNOWN_DATASETS[name]
        folder = data_root(data_dir) / sub
        if not folder.is_dir():
            raise DataFormatError(folder, f"dataset folder for {name!r} not found (set PROFILEREC_DATA_DIR)")
        return loader(folder)
    path = Path(name)
    if (path / "dataset.json").exists():
        return InteractionDataset.load(path)
    raise ValueError(
        f"unknown dataset {name!r}: use one of {', '.join(KNOWN_DATASETS)} or the folder of a saved dataset "
        "(see `profilerec-data import` for CSV/Parquet/JSONL input)"
    )
