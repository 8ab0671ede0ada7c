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

from offline_jobs.publish.promote import publish
from offline_jobs.publish.qdrant_upload import qdrant_client
from rec_contract.bundle import read_manifest, seal_manifest
from rec_contract.profile_store import read_profiles, write_profiles
from service.app import create_app
from tests.integration.conftest import KEYS, service_settings
from training.data import default_split_method, split_dataset
from training.export import _write_profiles

pytestmark = pytest.mark.integration


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

    source = artefacts.bundles["lightgcn"]
    bundle = root / "bundles" / source.name
    shutil.copytree(source, bundle)
    profiles = SimpleNamespace(
        user_vectors=np.load(bundle / "user_profiles.npy"),
        user_mask=np.load(bundle / "user_profile_mask.npy"),
        item_vectors=np.load(bundle / "item_profiles.npy"),
        item_mask=np.load(bundle / "item_profile_mask.npy"),
    )
    _write_profiles(bundle, SimpleNamespace(profiles=profiles, profile_store=store), dataset)  # type: ignore[arg-type]
    seal_manifest(bundle, read_manifest(bundle))
    client = qdrant_client(path=root / "qdrant")
    try:
        publish(bundle, client, store)
    finally:
        client.close()
    expected = {
        u0: [{"text": texts[(u0, 0)][0], "source": "llm", "grounded_on": history}],
        u1: [
            {"text": texts[(u1, 0)][0], "source": "extractive", "grounded_on": []},
            {"text": texts[(u1, 1)][0], "source": "llm", "grounded_on": []},
        ],
    }
    return bundle.parent, root / "qdrant", expected


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
