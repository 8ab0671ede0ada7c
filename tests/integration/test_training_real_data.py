"""The trainers on the real datasets, briefly: one epoch per model on MovieLens-100k through the CLI
(base, and ProEx with profile vectors from a store), and the ProEx path on the RLMRec Amazon-Book split
with synthetic profile vectors (no profile text exists offline for it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rec_contract.profile_store import write_profile_vectors
from training.cli import main as cli_main
from training.data import load_dataset, split_dataset
from training.models import ProExConfig, build_model
from training.profiles import load_profile_inputs
from training.runs import load_run

pytestmark = pytest.mark.integration


def synthetic_store(folder: Path, user_ids: np.ndarray, item_ids: np.ndarray, k: int, dim: int) -> Path:
    """A profile store of random unit vectors; every 7th user and item left without profiles."""
    rng = np.random.default_rng(0)
    entries = []
    for entity, ids in (("user", user_ids), ("item", item_ids)):
        for idx, raw in enumerate(ids):
            if idx % 7 == 3:
                continue
            vectors = rng.standard_normal((k, dim)).astype(np.float32)
            entries.append((entity, str(raw), vectors / np.linalg.norm(vectors, axis=1, keepdims=True)))
    write_profile_vectors(folder, entries, embedding_model="synthetic-random", version="synthetic-v1")
    return folder


@pytest.mark.parametrize("model", ["lightgcn", "multvae"])
def test_movielens_one_epoch_base_and_proex(model: str, data_dir: Path, tmp_path: Path) -> None:
    dataset = load_dataset("movielens-100k", data_dir)
    store = synthetic_store(tmp_path / "store", dataset.user_ids, dataset.item_ids, k=4, dim=32)
    common = ["--dataset", "movielens-100k", "--data-dir", str(data_dir), "--model", model]
    common += ["--epochs", "1", "--eval-every", "1", "--no-progress"]
    cli_main([*common, "--out", str(tmp_path / "base")])
    cli_main([*common, "--proex", "--profiles", str(store), "--out", str(tmp_path / "proex")])
    for variant in ("base", "proex"):
        metrics = json.loads((tmp_path / variant / "metrics.json").read_text())
        assert 0.0 < metrics["test"]["recall@20"] < 1.0
    config = json.loads((tmp_path / "proex" / "config.json").read_text())
    assert config["profiles"]["version"] == "synthetic-v1"
    assert 0.8 < config["profiles"]["user_coverage"] < 0.9
    reloaded, _ = load_run(tmp_path / "proex")
    users = np.arange(50)
    again, _ = load_run(tmp_path / "proex")
    assert torch.equal(reloaded.score_all(users), again.score_all(users))


@pytest.mark.parametrize("model", ["lightgcn", "multvae"])
def test_amazon_proex_path_with_synthetic_vectors(model: str, data_dir: Path, tmp_path: Path) -> None:
    dataset = load_dataset("rlmrec-amazon-book", data_dir)
    split = split_dataset(dataset, "predefined")
    store = synthetic_store(tmp_path / "store", dataset.user_ids, dataset.item_ids, k=4, dim=16)
    profiles = load_profile_inputs(store, dataset, k=4)
    assert profiles.user_vectors.shape == (11_000, 4, 16)
    torch.manual_seed(0)
    fused = build_model(model, split.train, None, ProExConfig(mapping_hidden=32), profiles)
    optimizer = fused.make_optimizer()
    fused.train()
    for _, batch in zip(range(2), fused.epoch_batches(np.random.default_rng(0)), strict=False):
        optimizer.zero_grad()
        output = fused.loss(batch)
        output.total.backward()
        optimizer.step()
        assert np.isfinite(output.parts["loss"]) and output.parts["variance"] >= 0.0
    fused.eval()
    users = np.arange(0, 11_000, 997)
    scores = fused.score_all(users)
    assert scores.shape == (len(users), 9_332) and torch.isfinite(scores).all()
