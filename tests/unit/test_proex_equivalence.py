"""The ProEx models train and score exactly as they did before the shared ProEx plumbing and the
faster fused step: seeded three-epoch runs on the toy data of ``test_models`` must reproduce the loss
parts of every epoch, the validation Recall@20 and the final scores recorded in
``golden/proex_trace.json`` (written by the implementation before the refactor, see :func:`trace`).

Regenerate only for an intended change of behaviour:
``PYTHONPATH=. python -m tests.unit.test_proex_equivalence``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.unit.test_models import SMALL, profiles_for, toy_dataset
from training.data import split_dataset
from training.models import ProExConfig, TrainConfig, build_model

GOLDEN = Path(__file__).with_name("golden") / "proex_trace.json"

# name -> (model kind, ProEx options or None for the base model)
CASES: dict[str, tuple[str, dict[str, Any] | None]] = {
    "lightgcn-base": ("lightgcn", None),
    "lightgcn-proex": ("lightgcn", {}),
    "lightgcn-proex-input": ("lightgcn", {"fusion_stage": "input"}),
    "lightgcn-proex-dot-nomix": ("lightgcn", {"reg_similarity": "dot", "use_mixing": False}),
    "lightgcn-proex-novar-noalign": ("lightgcn", {"use_variance": False, "use_alignment": False}),
    "lightgcn-proex-regularised": (
        "lightgcn",
        {
            "mapping_zero_init": True,
            "mapping_weight_decay": 0.1,
            "mapping_lr": 5e-3,
            "profile_dropout": 0.1,
            "mapping_dropout": 0.2,
        },
    ),
    "multvae-base": ("multvae", None),
    "multvae-proex": ("multvae", {}),
    "multvae-proex-dot-noreg": ("multvae", {"reg_similarity": "dot", "use_regulariser": False}),
    "multvae-proex-nomix": ("multvae", {"use_mixing": False, "lambda_align": 1.0}),
    "multvae-proex-regularised": (
        "multvae",
        {
            "mapping_zero_init": True,
            "mapping_weight_decay": 0.1,
            "profile_dropout": 0.1,
            "mapping_dropout": 0.2,
        },
    ),
}
SCORED_USERS = np.arange(0, 40, 3)


def trace(name: str) -> dict[str, Any]:
    """Three seeded epochs of case ``name``: per-epoch loss parts and validation R@20, final scores."""
    kind, options = CASES[name]
    split = split_dataset(toy_dataset(), "random", seed=1)
    torch.manual_seed(0)
    proex = ProExConfig(n_profiles=4, mapping_hidden=12, **options) if options is not None else None
    profiles = profiles_for(split, 4) if options is not None else None
    model = build_model(kind, split.train, {**SMALL[kind], "lr": 1e-2}, proex, profiles)
    result = model.fit(split, TrainConfig(epochs=3, eval_every=1, patience=5, progress=False, threads=1))
    epochs = [
        {k: v for k, v in row.items() if not k.endswith("seconds") and isinstance(v, float | int)}
        for row in result.history
    ]
    return {"epochs": epochs, "scores": model.score_all(SCORED_USERS).tolist()}


@pytest.fixture(scope="module")
def golden() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(GOLDEN.read_text())
    return data


@pytest.mark.parametrize("name", sorted(CASES))
def test_training_and_scores_match_the_recorded_trace(name: str, golden: dict[str, Any]) -> None:
    expected, got = golden[name], trace(name)
    assert len(got["epochs"]) == len(expected["epochs"])
    for row, want in zip(got["epochs"], expected["epochs"], strict=True):
        assert set(row) == set(want)
        for key, value in want.items():
            assert row[key] == pytest.approx(value, rel=1e-4, abs=1e-6), (name, row["epoch"], key)
    np.testing.assert_allclose(np.array(got["scores"]), np.array(expected["scores"]), rtol=1e-4, atol=1e-5)


if __name__ == "__main__":
    GOLDEN.write_text(json.dumps({name: trace(name) for name in sorted(CASES)}, indent=1) + "\n")
    print(f"wrote {GOLDEN}")
