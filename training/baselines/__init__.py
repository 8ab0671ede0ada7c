"""Baselines beside every trained model: EASE, item-kNN and MostPop (numpy/scipy, no torch), fitted on
the training matrix and evaluated with the same full-ranking protocol (:mod:`training.baselines.compare`),
and, in :mod:`training.baselines.profile_only` (imports torch), ProfileOnly, a model that sees only the
profile vectors."""

from training.baselines.base import Baseline
from training.baselines.compare import BaselineOptions, comparison_lines, fit_baselines, gap_to_ease
from training.baselines.ease import EASE, EASETooLargeError
from training.baselines.itemknn import ItemKNN
from training.baselines.mostpop import MostPop

__all__ = [
    "EASE",
    "Baseline",
    "BaselineOptions",
    "EASETooLargeError",
    "ItemKNN",
    "MostPop",
    "comparison_lines",
    "fit_baselines",
    "gap_to_ease",
]
