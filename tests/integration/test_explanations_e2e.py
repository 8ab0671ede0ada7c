"""explain=true end to end on a real bundle (issue 18, part 5): a profile store holding an LLM profile
that failed the grounding check, passing ones and an extractive fallback is exported into the bundle
and uploaded to Qdrant; both profile sources answer with the passing and the extractive profiles only,
each with its source and the history items it is grounded on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

from offline_jobs.context import load_context
from offline_jobs.jobs.runner import ProfileJob
from offline_jobs.llm.base import GenerationResult
from offline_jobs.llm.fake import FakeBackend
from offline_jobs.profiles.extractive import build_extractive_rows
from offline_jobs.profiles.generation import GenerationConfig
from offline_jobs.publish.promote import publish
from offline_jobs.publish.qdrant_upload import qdrant_client
from rec_contract.bundle import read_manifest, seal_manifest
from rec_contract.profile_store import read_profiles, write_profiles
from service.app import create_app
from tests.integration.conftest import KEYS, service_settings
from tests.unit._fakes import HashEmbedder
from training.data import default_split_method, split_dataset
from training.export import _write_profiles

pytestmark = pytest.mark.integration


def _bundle_with_store(artefacts, root: Path, store: Path) -> tuple[Path, Path]:
    """A copy of the LightGCN bundle whose profile texts and labels come from ``store``, published to
    a fresh Qdrant; returns the bundles root and the Qdrant folder."""
    source = artefacts.bundles["lightgcn"]
    bundle = root / "bundles" / source.name
    shutil.copytree(source, bundle)
    profiles = SimpleNamespace(
        user_vectors=np.load(bundle / "user_profiles.npy"),
        user_mask=np.load(bundle / "user_profile_mask.npy"),
        item_vectors=np.load(bundle / "item_profiles.npy"),
        item_mask=np.load(bundle / "item_profile_mask.npy"),
    )
    _write_profiles(
        bundle, SimpleNamespace(profiles=profiles, profile_store=store), dataset=artefacts.dataset
    )  # type: ignore[arg-type]
    seal_manifest(bundle, read_manifest(bundle))
    client = qdrant_client(path=root / "qdrant")
    try:
        publish(bundle, client, store)
    finally:
        client.close()
    return bundle.parent, root / "qdrant"


def _labelled_bundle(artefacts, root: Path) -> tuple[Path, Path, dict[str, list[dict]]]:
    """A copy of the LightGCN bundle and a fresh Qdrant whose profile texts come from a store with
    verdicts; returns the bundles root, the Qdrant folder and the explanations each user must get."""
    dataset = artefacts.dataset
    train = split_dataset(dataset, default_split_method(dataset.name), seed=2024).train.tocsr()
    u0, u1 = str(dataset.user_ids[0]), str(dataset.user_ids[1])
    history = [str(dataset.item_ids[i]) for i in train[0].indices[:2]]
    passing = {"source": "llm", "grounding": {"passed": True, "score": 0.9, "grounded_on": history}}
    failing = {"source": "llm", "grounding": {"passed": False, "score": 0.1, "reasons": ["invented_title"]}}
    fallback = {"source": "extractive", "grounding": {"passed": True, "by_construction": True}}
    texts = {
        (u0, 0): ("Enjoys the titles of their history.", passing, False),
        (u0, 1): ("Loves The Legend of Zelda (2019).", failing, False),
        (u1, 0): ("User 2 watched many dramas.", fallback, True),
        (u1, 1): ("A faithful summary of user 2.", {**passing, "grounding": {"passed": True}}, False),
    }
    store = root / "store"
    shutil.copytree(artefacts.store, store)
    rows = read_profiles(store)
    for row in rows:
        found = texts.get((row["entity_id"], int(row["slot"]))) if row["entity_type"] == "user" else None
        if found is not None:
            text, quality, is_fallback = found
            row.update(
                text=text, quality=json.dumps(quality), is_fallback=is_fallback, strategy="proex",
                model="extractive" if is_fallback else "smollm2",
            )  # fmt: skip
    write_profiles(store, rows)

    bundles_root, qdrant = _bundle_with_store(artefacts, root, store)
    expected = {
        u0: [{"text": texts[(u0, 0)][0], "source": "llm", "grounded_on": history}],
        u1: [
            {"text": texts[(u1, 0)][0], "source": "extractive", "grounded_on": []},
            {"text": texts[(u1, 1)][0], "source": "llm", "grounded_on": []},
        ],
    }
    return bundles_root, qdrant, expected


@pytest.mark.parametrize("engine", ["exact", "qdrant"])
def test_explain_returns_only_grounded_profiles_labelled(artefacts, redis_server, tmp_path, engine) -> None:
    bundles_root, qdrant_path, expected = _labelled_bundle(artefacts, tmp_path / "labelled")
    redis.Redis.from_url(redis_server.url).flushall()
    settings = service_settings(
        artefacts, "lightgcn", tmp_path, redis_server.url, bundles_root=bundles_root,
        qdrant_path=qdrant_path, engine=engine,
    )  # fmt: skip
    with TestClient(create_app(settings), headers=KEYS) as client:
        for user, wanted in expected.items():
            body = client.get(f"/v1/users/{user}/recommendations?n=3&explain=true").json()
            assert body["explanations"] == wanted
            assert body["user_profiles"] == [e["text"] for e in wanted]
            assert "Zelda" not in json.dumps(body)  # the failed profile is never returned
        plain = client.get(f"/v1/users/{next(iter(expected))}/recommendations?n=3").json()
        assert plain["explanations"] is None and plain["user_profiles"] is None
        cold = client.post(
            "/v1/recommendations", json={"text": "space operas", "n": 3, "explain": True}
        ).json()
        assert cold["explanations"] == [{"text": "space operas", "source": "request", "grounded_on": []}]


class _Inventing(FakeBackend):
    """Every profile names a film no catalogue holds: the job falls back to the extractive profile."""

    model_id = "inventing"

    def generate(self, requests):
        self.calls += 1
        text = 'This viewer likes drama, above all the film "The Dark Knight Rider", seen every week.'
        return [GenerationResult(text=text, finish_reason="stop", model=self.model_id) for _ in requests]


def test_explain_labels_extractive_profiles_with_the_history_they_name(artefacts, redis_server, tmp_path):
    """Both ways an extractive profile reaches a user (the extractive store, the generation job's
    fallback after the grounding check rejected every attempt) end in explanations labelled
    ``extractive`` with the user's history items the text names."""
    dataset = artefacts.dataset
    ctx = load_context(dataset, default_split_method(dataset.name), 2024)
    u0, u1 = str(dataset.user_ids[0]), str(dataset.user_ids[1])
    fresh = build_extractive_rows(ctx, 2, "t1", users=[0], items=[])
    job = ProfileJob(
        ctx, _Inventing(), HashEmbedder(), tmp_path / "job",
        GenerationConfig(strategy="reclm", k=2, version="t1", max_retries=0), max_active=2,
    )  # fmt: skip
    try:
        job.run([1], [])
    finally:
        job.close()
    generated = {(r["entity_id"], int(r["slot"])): r for r in read_profiles(tmp_path / "job")}
    fresh_rows = {(r["entity_id"], int(r["slot"])): r for r in fresh}
    assert all(r["is_fallback"] for r in generated.values())
    store = tmp_path / "store"
    shutil.copytree(artefacts.store, store)
    rows = read_profiles(store)
    for row in rows:
        key = (row["entity_id"], int(row["slot"]))
        new = (fresh_rows.get(key) or generated.get(key)) if row["entity_type"] == "user" else None
        if new is not None:
            quality = new["quality"]
            row.update(
                {key: new[key] for key in ("text", "is_fallback", "strategy", "model")},
                quality=quality if isinstance(quality, str) else json.dumps(quality),
            )
    write_profiles(store, rows)
    bundles_root, qdrant_path = _bundle_with_store(artefacts, tmp_path / "served", store)
    redis.Redis.from_url(redis_server.url).flushall()
    settings = service_settings(
        artefacts, "lightgcn", tmp_path, redis_server.url, bundles_root=bundles_root,
        qdrant_path=qdrant_path, engine="qdrant",
    )  # fmt: skip
    train = ctx.train
    with TestClient(create_app(settings), headers=KEYS) as client:
        for user, index, source_rows in ((u0, 0, fresh_rows), (u1, 1, generated)):
            body = client.get(f"/v1/users/{user}/recommendations?n=3&explain=true").json()
            history = {str(dataset.item_ids[i]) for i in train[index].indices}
            explained = body["explanations"]
            assert [e["text"] for e in explained] == [source_rows[(user, s)]["text"] for s in (0, 1)]
            assert all(e["source"] == "extractive" for e in explained)
            assert explained[0]["grounded_on"]  # the overview names the user's favourites
            for e in explained:
                assert set(e["grounded_on"]) <= history
                titles = {str(dataset.items["title"].iloc[dataset.item_index()[i]]) for i in e["grounded_on"]}
                assert all(t in e["text"] for t in titles)
