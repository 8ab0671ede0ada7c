"""Data ingestion into one canonical form, and splits."""

from training.data.dataset import InteractionDataset, PredefinedSplit
from training.data.errors import DataFormatError, IngestReport
from training.data.generic import ColumnNames, load_generic
from training.data.mind import load_mind
from training.data.movielens import load_movielens_100k
from training.data.registry import KNOWN_DATASETS, data_root, default_split_method, load_dataset
from training.data.rlmrec import load_rlmrec_split
from training.data.split import Split, split_dataset

__all__ = [
    "KNOWN_DATASETS",
    "ColumnNames",
    "DataFormatError",
    "IngestReport",
    "InteractionDataset",
    "PredefinedSplit",
    "Split",
    "data_root",
    "default_split_method",
    "load_dataset",
    "load_generic",
    "load_mind",
    "load_movielens_100k",
    "load_rlmrec_split",
    "split_dataset",
]
