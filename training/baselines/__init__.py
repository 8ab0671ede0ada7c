"""Baselines: MostPop (non-learned) and, in :mod:`training.baselines.profile_only` (imports torch),
ProfileOnly, a model that sees only the profile vectors."""

from training.baselines.mostpop import MostPop

__all__ = ["MostPop"]
