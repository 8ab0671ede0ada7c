"""The ProEx paper's "leave one in" utility of a profile store (Fig. 4b): each profile alone.

The paper takes Mult-VAE as the base model and incorporates *each profile individually* into its
training: for every profile slot k (slot 0 the original profile, slots 1..K-1 the new profiles NP #k),
a fused model is trained with that slot as its only profile (K = 1), and its recommendation quality is
compared with the base model (no profile) and with the fusion of all K slots. Here every model is
scored on the validation split's Recall@20, over every user with validation items (``valid_r20``) and
over the users the store has profiles for (``valid_r20_profiled``: a sampled store covers a few hundred
users; the others get no profile term and dilute the difference).

Training is bounded (``epochs``, ``eval_every``, ``patience``; early stopping on validation Recall@20,
the best epoch's weights kept), which the record states: the figures rank the slots against each other
and against the base model trained the same way, not the models' converged quality.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class UtilityOptions:
    model: str = "multvae"  # the paper's base model of Fig. 4b
    epochs: int = 120
    eval_every: int = 5
    patience: int = 4
    seed: int = 2024
    threads: int = 1
    split_seed: int = 2024


def slot_inputs(profiles: Any, slot: int) -> Any:
    """The profile inputs restricted to one slot (``[N, 1, d]``)."""
    from training.profiles import ProfileInputs

    return ProfileInputs(
        profiles.user_vectors[:, slot : slot + 1],
        profiles.user_mask[:, slot : slot + 1],
        profiles.item_vectors[:, slot : slot + 1],
        profiles.item_mask[:, slot : slot + 1],
        {**profiles.source, "slot": slot},
    )


def variants(k: int) -> list[tuple[str, int | None]]:
    """(label, slot) of every model to train: the base model, each slot alone, all K slots (None)."""
    return [("base", -1), *((f"slot{j}" if j else "slot0 (original)", j) for j in range(k)), ("all", None)]


def leave_one_in(
    store: str | Path,
    k: int,
    dataset_name: str,
    options: UtilityOptions,
    data_dir: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Train the base model, one fused model per profile slot and the all-K fused model; one row each."""
    import torch

    from benchmarks.train_quality import train_config
    from training.data import default_split_method, load_dataset, split_dataset
    from training.evaluation import evaluate
    from training.models import build_model
    from training.proex import proex_defaults
    from training.profiles import load_profile_inputs

    dataset = load_dataset(dataset_name, data_dir)
    split = split_dataset(dataset, default_split_method(dataset.name), seed=options.split_seed)
    full = load_profile_inputs(store, dataset, k)
    profiled = np.flatnonzero(full.user_mask.any(axis=1))
    config = train_config(argparse.Namespace(**asdict(options)), options.seed, progress=False)
    rows: list[dict[str, Any]] = []
    for label, slot in variants(k):
        if slot == -1:
            proex, inputs = None, None
        elif slot is None:
            proex, inputs = proex_defaults(options.model, n_profiles=k), full
        else:
            proex, inputs = proex_defaults(options.model, n_profiles=1), slot_inputs(full, slot)
        started = time.perf_counter()
        torch.manual_seed(options.seed)
        model = build_model(options.model, split.train, {}, proex, inputs)
        with tempfile.TemporaryDirectory(prefix="leave-one-in-") as run_dir:
            fit = model.fit(split, config, run_dir)
        scorer = model.make_scorer()
        valid = evaluate(scorer, split, "valid").metrics
        sub = evaluate(scorer, split, "valid", users=profiled).metrics
        rows.append(
            {
                "profiles": label,
                "valid_r20": round(float(valid["recall@20"]), 4),
                "valid_r20_profiled": round(float(sub["recall@20"]), 4),
                "valid_n20_profiled": round(float(sub["ndcg@20"]), 4),
                "best_epoch": fit.best_epoch,
                "epochs_run": fit.epochs_run,
                "wall_s": round(time.perf_counter() - started, 1),
            }
        )
    base = float(rows[0]["valid_r20_profiled"])
    for row in rows[1:]:
        row["vs_base_profiled"] = round(float(row["valid_r20_profiled"]) - base, 4)
    return rows
