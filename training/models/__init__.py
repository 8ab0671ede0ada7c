"""Trainable recommenders (LightGCN, Mult-VAE), optionally fused with profile vectors the ProEx way."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any

import scipy.sparse as sp

from training.models.base import FitResult, LossOutput, Recommender, TrainConfig, Trainer, seed_everything
from training.models.lightgcn import LightGCN, LightGCNConfig
from training.models.multvae import MultVAE, MultVAEConfig
from training.proex import ProExConfig
from training.profiles import ProfileInputs

ModelFactory = Callable[[sp.csr_matrix, Any, ProExConfig | None, ProfileInputs | None], Recommender]

# kind -> (model class, hyperparameter dataclass)
MODELS: dict[str, tuple[ModelFactory, type[Any]]] = {
    "lightgcn": (LightGCN, LightGCNConfig),
    "multvae": (MultVAE, MultVAEConfig),
}


def model_config(kind: str, hyperparameters: dict[str, Any] | None = None) -> Any:
    """The typed hyperparameters of model ``kind`` (defaults overridden by ``hyperparameters``)."""
    if kind not in MODELS:
        raise ValueError(f"unknown model {kind!r}: use one of {', '.join(MODELS)}")
    config_type = MODELS[kind][1]
    values = dict(hyperparameters or {})
    unknown = set(values) - {f.name for f in fields(config_type)}
    if unknown:
        raise ValueError(f"unknown {kind} hyperparameters: {sorted(unknown)}")
    return config_type(**values)


def build_model(
    kind: str,
    train: sp.csr_matrix,
    hyperparameters: dict[str, Any] | None = None,
    proex: ProExConfig | None = None,
    profiles: ProfileInputs | None = None,
) -> Recommender:
    """Build model ``kind`` ("lightgcn" or "multvae") for the training matrix ``train``.

    ``proex`` and ``profiles`` together give the ProEx-fused model; neither gives the base model.
    """
    config = model_config(kind, hyperparameters)
    return MODELS[kind][0](train, config, proex, profiles)


__all__ = [
    "MODELS",
    "FitResult",
    "LightGCN",
    "LightGCNConfig",
    "LossOutput",
    "MultVAE",
    "MultVAEConfig",
    "ProExConfig",
    "Recommender",
    "TrainConfig",
    "Trainer",
    "build_model",
    "model_config",
    "seed_everything",
]
