"""Non-learned baselines."""

from training.baselines.mostpop import MostPop

__all__ = ["MostPop"]
