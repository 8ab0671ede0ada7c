"""The MIND zero-shot benchmark (benchmarks.cold_start_mind): day N as its own dataset, the zero-shot
split, items entered as text (LightGCN ``item_ids=False``), a store of item profiles only, and a tiny
end to end run through the exported bundle and the in-process service."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import cold_start_mind as mind
from rec_contract.profile_store import write_profile_vectors
from training.data import load_dataset, split_dataset
from training.models import LightGCN, build_model
from training.proex import ProExConfig
from training.profiles import load_profile_inputs, synthetic_profile_inputs

pytestmark = pytest.mark.integration

TOPICS = {
    "sports": ["football match ends in a late goal", "basketball star signs a record deal", "tennis final"],
    "weather": ["storm brings snow to the mountains", "heat wave breaks records", "floods close roads"],
    "finance": ["stocks fall as rates rise", "bank reports quarterly profit", "oil prices jump"],
}


def write_tiny_release(folder: Path, seed: int = 0) -> Path:
    """A MIND-format release: 3 topics, readers of one topic each; day N+1 adds new items."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    items, topic_of = [], []
    for item in range(60):
        topic = list(TOPICS)[item % 3]
        headline = TOPICS[topic][item % len(TOPICS[topic])]
        items.append(
            {
                "item_id": item,
                "category": topic,
                "subcategory": f"{topic}-{item % 2}",
                "title": f"{headline} ({item})",
                "abstract": f"A {topic} story: {headline}.",
            }
        )
        topic_of.append(item % 3)
    with (folder / "items.jsonl").open("w") as fh:
        fh.writelines(json.dumps(row) + "\n" for row in items)
    day_n, day_next = list(range(40)), list(range(20, 60))  # 20..39 on both days, 40..59 new
    train, test = ["user_id\titem_id"], ["user_id\titem_id"]
    for user in range(60):
        side = user % 3
        own = [i for i in day_n if topic_of[i] == side]
        for item in rng.choice(own, size=int(rng.integers(2, 5)), replace=False):
            train.append(f"{user}\t{item}")
        fresh = [i for i in day_next if topic_of[i] == side]
        for item in rng.choice(fresh, size=2, replace=False):
            test.append(f"{user}\t{item}")
    (folder / "train.tsv").write_text("\n".join(train) + "\n")
    (folder / "test.tsv").write_text("\n".join(test) + "\n")
    with (folder / "item_profiles_gpt35.jsonl").open("w") as fh:
        for item in range(0, 40, 2):
            topic = list(TOPICS)[item % 3]
            row = {
                "item_id": item,
                "identity": f"User identity: {topic} fan",
                "interests": f"User interests: {topic}",
            }
            fh.write(json.dumps(row) + "\n")
    return folder


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mind-data")
    write_tiny_release(root / "mind-reclm")
    return root


def test_day_n_is_the_catalogue_of_day_n_and_zero_shot_clicks_are_on_new_items(release: Path) -> None:
    task = mind.load_task(release)
    assert task.n_items == 60 and list(task.catalogue) == list(range(40))
    assert task.cold.sum() == 20 and task.cold[40:].all()
    zero = task.split("zero-shot").test.tocoo()
    assert zero.nnz > 0 and task.cold[zero.col].all()
    full = task.split("full-shot").test
    assert full.nnz == task.test.nnz and full.nnz > zero.nnz
    day = mind.day_n_dataset(task, seed=3)
    assert day.n_items == 40 and day.n_users == task.n_users
    split = split_dataset(day, "predefined")
    assert split.train.nnz + split.valid.nnz == task.train.nnz
    held = np.diff(split.valid.indptr)
    assert held.max() == 1 and held.sum() == round(mind.VALID_SHARE * (np.diff(task.train.indptr) >= 2).sum())
    # the held-out clicks are day-N clicks of the same users, not new pairs
    assert (split.valid.multiply(task.train[:, :40]) != 0).sum() == split.valid.nnz
    assert (split.train.multiply(split.valid) != 0).sum() == 0


def test_items_without_ids_score_a_new_item_through_the_tower_as_the_model_would() -> None:
    rng = np.random.default_rng(0)
    train = (rng.random((30, 12)) < 0.3).astype(np.float32)
    train[:, 11] = 0.0  # item 11: no interaction, like a zero-shot item
    import scipy.sparse as sp

    matrix = sp.csr_matrix(train)
    profiles = synthetic_profile_inputs(30, 12, 1, 8, seed=1)
    profiles.user_mask[:] = False
    profiles.user_vectors[:] = 0.0
    with pytest.raises(ValueError, match="item_ids=False"):
        build_model("lightgcn", matrix, {"item_ids": False}, ProExConfig(n_profiles=1), profiles)
    model = build_model(
        "lightgcn",
        matrix,
        {"item_ids": False, "n_layers": 2},
        ProExConfig(n_profiles=1, fusion_stage="input"),
        profiles,
    )
    assert isinstance(model, LightGCN) and model.mapping is not None
    assert "item_embedding" not in dict(model.named_parameters())
    with torch.no_grad():
        items = model.encode_items()
        tower = model.item_tower()(
            torch.zeros(1, items.shape[1]), torch.from_numpy(profiles.item_vectors[11:12]), torch.ones(1, 1)
        )
    assert torch.allclose(items[11], tower[0], atol=1e-6)
    assert items[11].abs().sum() > 0  # known by its text alone
    # users without profiles are not mapped, and the loss trains
    model.train()
    batch = next(model.epoch_batches(np.random.default_rng(0)))
    loss = model.loss(batch).total
    loss.backward()
    assert model.mapping.hidden.weight.grad is not None


def test_a_store_of_item_profiles_only_gives_users_an_empty_mask(release: Path, tmp_path: Path) -> None:
    dataset = load_dataset("mind-reclm", release)
    vectors = np.eye(4, 8, dtype=np.float32)[None].repeat(2, axis=0)[:, :2]  # [2, 2, 8]
    write_profile_vectors(
        tmp_path, [("item", str(dataset.item_ids[i]), vectors[i]) for i in range(2)], "test-model", "v1"
    )
    inputs = load_profile_inputs(tmp_path, dataset, 2)
    assert not inputs.user_mask.any() and inputs.user_vectors.shape == (dataset.n_users, 2, 8)
    assert inputs.item_mask[:2].all() and not inputs.item_mask[2:].any()


def test_item_profiles_come_from_the_release_the_extractive_facet_and_similar_items(release: Path) -> None:
    task = mind.load_task(release)
    day = mind.day_n_dataset(task)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((task.n_items, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    texts, sources = mind.item_profiles(task, day, vectors)
    assert sources[:40] == ["gpt-3.5" if i % 2 == 0 else "extractive" for i in range(40)]
    assert texts[0].startswith("User identity:") and "readers" in texts[1]
    assert set(sources[40:]) == {"similar items"}
    nearest = int(np.argmax(vectors[:40] @ vectors[50]))
    assert texts[nearest].replace("\n", "; ") in texts[50]


@pytest.mark.filterwarnings("ignore")  # torch.onnx exporter chatter
def test_tiny_end_to_end_through_the_bundle_and_the_service(release: Path, tmp_path: Path) -> None:
    from offline_jobs.jobs.embedding import export_text_encoder

    encoder = Path(export_text_encoder(tmp_path / "text_encoder"))
    args = mind.build_parser().parse_args(
        [
            "--data-dir", str(release),
            "--work-dir", str(tmp_path / "work"),
            "--text-encoder", str(encoder),
            "--seeds", "1",
            "--epochs", "6",
            "--patience", "2",
            "--agreement-users", "8",
        ]
    )  # fmt: skip
    figures = mind.run(args)
    rows = {(r["row"], r["setting"]): r for r in figures["table"]}
    for name in ("MostPop", "text similarity", "LightGCN text", "LightGCN text+profile, neighbours"):
        assert (name, "full-shot") in rows and (name, "zero-shot, all items") in rows
    assert rows[("MostPop", "zero-shot, all items")]["R@20"] == 0.0  # new items have no clicks
    # on topical readers, text finds the new items of their topic; every row served by the bundle
    assert rows[("text similarity", "zero-shot, zero-shot items")]["R@20"] > 0.5
    for row in figures["per_seed"]:
        if row["row"].startswith("LightGCN"):
            assert row["agreement"]["same_top40"] == row["agreement"]["users"] == 8
    assert set(figures["profile_sources"]) == {"gpt-3.5", "extractive", "similar items"}
    verdicts = mind.criteria(figures["table"])
    assert set(verdicts) == {"LightGCN text+profile", "LightGCN text+profile, neighbours"}
    assert all(isinstance(v["met (zero-shot over all items)"], bool) for v in verdicts.values())
    # resumable: a second run reads every figure from the cache
    again = mind.run(args)
    assert again["table"] == figures["table"]
