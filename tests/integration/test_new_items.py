"""The new-items measurement end to end on a small bundle (benchmarks.new_items): a model trained
without the held-out items, which enter through PUT /v1/items by text; the batch scores are the
service's own (the held-out items a user's answer returns carry the same scores)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks import new_items
from rec_contract.bundle import resolve_pointer
from training.models import TrainConfig

pytestmark = pytest.mark.integration


def test_held_out_items_enter_by_text_and_are_scored_as_the_service_scores_them(
    artefacts, data_dir: Path, tmp_path: Path
) -> None:
    held, dataset = new_items.held_out(data_dir)
    root = tmp_path / "new_items"
    held.kept.save(root / "dataset")
    train = TrainConfig(epochs=2, eval_every=1, patience=5, seed=7, progress=False)
    bundles = new_items.train_and_export(root, "multvae", "base", 7, train, artefacts.text_encoder)
    served = json.loads((resolve_pointer(bundles) / "items.json").read_text())
    assert len(served) == dataset.n_items - len(held.item_ids)
    assert set(served).isdisjoint(held.item_ids)  # the model never saw them
    # exported once: asking again reuses the run and the bundle
    assert new_items.train_and_export(root, "multvae", "base", 7, train, artefacts.text_encoder) == bundles
    meta = new_items.item_meta(dataset, held)
    texts = {item: f"A film called {m['title']}." for item, m in meta.items()}
    results = []
    for route in new_items.ROUTES:
        res = new_items.evaluate_bundle(
            bundles, held, texts, meta, tmp_path / route, route, agreement_users=30
        )
        assert res["vector_sources"] == {"text": len(held.item_ids)}  # the new-item path, every one
        assert res["candidates"] == len(held.item_ids)
        assert res["users"] == int((np.diff(held.truth().indptr) > 0).sum())
        assert res["agreement"]["scores_compared"] > 0
        assert res["agreement"]["max_abs"] < 1e-4
        assert 0.0 <= res["metrics"]["recall@20"] <= 1.0
        assert res["text_similarity"] is not None
        res.update(model="multvae", variant="base", seed=7, route=route)
        res["random"] = new_items.random_metrics(
            held.truth()[np.flatnonzero(np.diff(held.truth().indptr) > 0)]
        )
        results.append(res)
    # the ranking is informative: text similarity and the neighbours route beat random ranking
    rows = {row["row"]: row for row in new_items.summarise(results)}
    assert rows["text similarity to the user's history"]["x_random_R@20"] > 1.0
    assert rows["multvae base: neighbours"]["x_random_R@20"] > 1.0
    assert abs(rows["random"]["R@20"] - 20 / len(held.item_ids)) < 0.02  # about 20 of the candidates
