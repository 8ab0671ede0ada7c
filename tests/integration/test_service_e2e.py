"""The service end to end on real bundles (trained LightGCN and Mult-VAE, exported to ONNX), a real
redis-server and the real embedded Qdrant."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

from rec_contract.naming import generation_key, user_vector_key
from service.app import create_app
from service.settings import ServiceSettings
from tests.integration.conftest import KEYS, service_settings
from training.data import Split
from training.runs import SPLIT_DIR, load_run

pytestmark = pytest.mark.integration


_settings = service_settings


@pytest.fixture
def flushed_redis(redis_server) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def lightgcn_client(artefacts, redis_server, flushed_redis, tmp_path) -> Iterator[TestClient]:
    with TestClient(
        create_app(_settings(artefacts, "lightgcn", tmp_path, redis_server.url)), headers=KEYS
    ) as client:
        yield client


@pytest.fixture
def multvae_client(artefacts, redis_server, flushed_redis, tmp_path) -> Iterator[TestClient]:
    with TestClient(
        create_app(_settings(artefacts, "multvae", tmp_path, redis_server.url)), headers=KEYS
    ) as client:
        yield client


@pytest.fixture
def qdrant_lightgcn_client(artefacts, redis_server, flushed_redis, tmp_path) -> Iterator[TestClient]:
    """The Qdrant path (qdrant-client's local mode standing in for a server)."""
    settings = _settings(artefacts, "lightgcn", tmp_path, redis_server.url, engine="qdrant")
    with TestClient(create_app(settings), headers=KEYS) as client:
        yield client


@pytest.fixture
def lightgcn_input_fusion_client(artefacts, redis_server, flushed_redis, tmp_path) -> Iterator[TestClient]:
    settings = _settings(artefacts, "lightgcn-input-fusion", tmp_path, redis_server.url)
    with TestClient(create_app(settings), headers=KEYS) as client:
        yield client


def _offline_top_n(run_dir: Path, dataset, users: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The trained torch model's top-N (every interaction of the user masked, all splits) and its full
    score rows."""
    model, _ = load_run(run_dir)
    scores = model.score_all(users).numpy()
    everything = dataset.interaction_matrix().tocsr()
    assert Split.load(run_dir / SPLIT_DIR).train.nnz < everything.nnz  # valid/test hold items too
    masked = scores.copy()
    for row, user in enumerate(users):
        masked[row, everything[user].indices] = -np.inf
    return np.argsort(-masked, axis=1, kind="stable")[:, :n], scores


@pytest.mark.parametrize(
    ("kind", "engine"),
    [("lightgcn", "auto"), ("multvae", "auto"), ("lightgcn-input-fusion", "auto"), ("lightgcn", "qdrant")],
)
def test_served_top_n_equals_offline_model(
    kind, engine, artefacts, redis_server, flushed_redis, tmp_path
) -> None:
    rng = np.random.default_rng(5)
    users = np.sort(rng.choice(artefacts.dataset.n_users, size=25, replace=False))
    offline, scores = _offline_top_n(artefacts.runs[kind], artefacts.dataset, users, 20)
    item_index = artefacts.dataset.item_index()
    everything = artefacts.dataset.interaction_matrix().tocsr()
    settings = _settings(artefacts, kind, tmp_path, redis_server.url, engine=engine)
    with TestClient(create_app(settings), headers=KEYS) as client:
        for row, user in enumerate(users):
            raw = str(artefacts.dataset.user_ids[user])
            body = client.get(f"/v1/users/{raw}/recommendations?n=20").json()
            assert body["strategy"] == "personalized"
            served = [item_index[i["item_id"]] for i in body["items"]]
            # never an item the user interacted with, in any split (held-out test items included)
            assert not set(served) & set(everything[user].indices.tolist())
            expected = offline[row].tolist()
            for got, want in zip(served, expected, strict=True):
                # identical, or a tie in the offline scores (ONNX and torch agree to ~1e-6)
                assert got == want or abs(scores[row, got] - scores[row, want]) < 1e-4, (
                    raw,
                    served,
                    expected,
                )
            served_scores = np.array([i["score"] for i in body["items"]])
            np.testing.assert_allclose(served_scores, scores[row, served], rtol=1e-4, atol=1e-4)


def test_user_vector_cache_miss_then_hit(artefacts, lightgcn_client: TestClient, flushed_redis) -> None:
    def hits() -> float:
        for line in lightgcn_client.get("/metrics").text.splitlines():
            if line.startswith('profilerec_profile_cache_requests_total{result="hit"}'):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    user = str(artefacts.dataset.user_ids[3])
    version = lightgcn_client.app.state.runtime.holder.current.version  # type: ignore[attr-defined]
    key = user_vector_key(version, user)
    assert flushed_redis.get(key) is None
    before = hits()
    first = lightgcn_client.get(f"/v1/users/{user}/recommendations?n=5").json()
    assert hits() == before  # a miss
    ttl = flushed_redis.ttl(key)
    assert 0 < ttl <= ServiceSettings().cache_ttl_s  # filled on the miss, with a TTL
    assert flushed_redis.get(generation_key("user", user))  # the token it is valid under
    second = lightgcn_client.get(f"/v1/users/{user}/recommendations?n=5").json()
    assert first["items"] == second["items"]
    assert hits() == before + 1
    assert 'profilerec_profile_cache_requests_total{result="miss"}' in lightgcn_client.get("/metrics").text


def test_explain_adds_profiles_and_snippets(artefacts, lightgcn_client: TestClient) -> None:
    user = str(artefacts.dataset.user_ids[0])
    body = lightgcn_client.get(f"/v1/users/{user}/recommendations?n=3&explain=true").json()
    assert body["user_profiles"] and body["user_profiles"][0].startswith("Enjoyed ")
    # the fixture's store is extractive: grounded by construction, labelled so
    assert [e["text"] for e in body["explanations"]] == body["user_profiles"]
    assert {e["source"] for e in body["explanations"]} == {"extractive"}
    assert all(item["profile_snippet"] for item in body["items"])
    plain = lightgcn_client.get(f"/v1/users/{user}/recommendations?n=3").json()
    assert plain["user_profiles"] is None and plain["items"][0]["profile_snippet"] is None
    assert plain["explanations"] is None


def test_filters_category_and_exclude(artefacts, lightgcn_client: TestClient) -> None:
    user = str(artefacts.dataset.user_ids[10])
    top = lightgcn_client.get(f"/v1/users/{user}/recommendations?n=5").json()["items"]
    excluded = [top[0]["item_id"], top[1]["item_id"]]
    query = "&".join(f"exclude={i}" for i in excluded)
    again = lightgcn_client.get(f"/v1/users/{user}/recommendations?n=5&{query}").json()["items"]
    assert not {i["item_id"] for i in again} & set(excluded)
    horror = lightgcn_client.get(
        f"/v1/users/{user}/recommendations?n=10&category=Horror&category=Western"
    ).json()
    assert horror["items"] and all({"Horror", "Western"} & set(i["categories"]) for i in horror["items"])


def test_unknown_user_gets_popular_items(lightgcn_client: TestClient) -> None:
    body = lightgcn_client.get("/v1/users/somebody-new/recommendations?n=3").json()
    assert body["strategy"] == "popular"
    assert body["items"][0]["title"] == "Star Wars (1977)"


@pytest.mark.parametrize("client_name", ["lightgcn_client", "multvae_client", "lightgcn_input_fusion_client"])
def test_cold_start_from_liked_items_and_text(request, client_name: str) -> None:
    client: TestClient = request.getfixturevalue(client_name)
    liked = client.post("/v1/recommendations", json={"liked_items": ["50", "172", "181"], "n": 10}).json()
    assert liked["strategy"] == "personalized"
    assert not {"50", "172", "181"} & {i["item_id"] for i in liked["items"]}
    text = client.post(
        "/v1/recommendations", json={"text": "I love space adventures and epic sci-fi battles", "n": 10}
    )
    assert text.status_code == 200 and text.json()["strategy"] == "profile_only"
    both = client.post(
        "/v1/recommendations", json={"liked_items": ["50"], "text": "space opera", "n": 5}
    ).json()
    assert len(both["items"]) == 5
    bad = client.post("/v1/recommendations", json={"liked_items": ["50", "no-such-item"]})
    assert bad.status_code == 422 and bad.json()["error"]["details"]["unknown"] == ["no-such-item"]


@pytest.mark.parametrize("client_name", ["lightgcn_client", "multvae_client", "lightgcn_input_fusion_client"])
def test_new_item_is_recommendable_in_the_next_request(request, client_name: str) -> None:
    client: TestClient = request.getfixturevalue(client_name)
    text = "A haunted lighthouse keeper is stalked by a masked killer in this slasher horror film."
    put = client.put(
        "/v1/items/fresh-horror-1",
        json={"title": "Lighthouse Terror", "text": text, "categories": ["Horror"]},
    )
    assert put.status_code == 201, put.text
    assert put.json()["vector_source"] == "text"
    again = client.put(
        "/v1/items/fresh-horror-1",
        json={"title": "Lighthouse Terror", "text": text, "categories": ["Horror"]},
    )
    assert again.status_code == 200 and again.json()["created"] is False
    answer = client.post("/v1/recommendations", json={"text": text, "n": 20, "categories": ["Horror"]}).json()
    assert "fresh-horror-1" in [i["item_id"] for i in answer["items"]]
    # A new item can be liked by a cold-start user and receive feedback
    liked = client.post("/v1/recommendations", json={"liked_items": ["fresh-horror-1", "50"], "n": 5})
    assert liked.status_code == 200 and "fresh-horror-1" not in [i["item_id"] for i in liked.json()["items"]]
    assert (
        client.post(
            "/v1/feedback", json=[{"user_id": "1", "item_id": "fresh-horror-1", "type": "click"}]
        ).status_code
        == 200
    )


def test_feedback_is_appended_durably_and_filters_seen(
    artefacts, lightgcn_client: TestClient, tmp_path
) -> None:
    user = str(artefacts.dataset.user_ids[20])
    top = lightgcn_client.get(f"/v1/users/{user}/recommendations?n=3").json()["items"]
    events = [
        {"user_id": user, "item_id": top[0]["item_id"], "type": "click"},
        {
            "user_id": "brand-new-user",
            "item_id": "50",
            "type": "like",
            "timestamp": "2026-01-02T03:04:05Z",
            "value": 5,
        },
    ]
    response = lightgcn_client.post("/v1/feedback", json=events)
    assert response.json() == {"accepted": 2}
    lines = [json.loads(line) for line in (tmp_path / "feedback" / "feedback.jsonl").read_text().splitlines()]
    assert [(e["user_id"], e["item_id"], e["type"]) for e in lines] == [
        (e["user_id"], e["item_id"], e["type"]) for e in events
    ]
    assert lines[1]["timestamp"].startswith("2026-01-02T03:04:05")
    after = lightgcn_client.get(f"/v1/users/{user}/recommendations?n=3").json()["items"]
    assert top[0]["item_id"] not in [i["item_id"] for i in after]
    bad = lightgcn_client.post(
        "/v1/feedback", json=[{"user_id": user, "item_id": "no-such-item", "type": "click"}]
    )
    assert bad.status_code == 422
    assert (
        len((tmp_path / "feedback" / "feedback.jsonl").read_text().splitlines()) == 2
    )  # nothing half-written


def test_redis_down_keeps_answering_and_reports_degraded(
    artefacts, redis_server, lightgcn_client: TestClient
) -> None:
    user = str(artefacts.dataset.user_ids[30])
    before = lightgcn_client.get(f"/v1/users/{user}/recommendations?n=5").json()
    redis_server.stop()
    try:
        during = lightgcn_client.get(f"/v1/users/{user}/recommendations?n=5")
        assert during.status_code == 200
        assert during.json()["items"] == before["items"]
        ready = lightgcn_client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        assert "redis" in ready.json()["checks"] and ready.json()["checks"]["redis"] != "ok"
    finally:
        redis_server.start()
    assert lightgcn_client.get("/readyz").json()["status"] == "ready"


def test_qdrant_outage_is_503_with_reason(
    artefacts, qdrant_lightgcn_client: TestClient, free_port: int
) -> None:
    from qdrant_client import AsyncQdrantClient

    client = qdrant_lightgcn_client
    conn = client.app.state.runtime.qdrant  # type: ignore[attr-defined]
    embedded = conn.client
    conn.client = AsyncQdrantClient(url=f"http://127.0.0.1:{free_port}", timeout=1)
    conn.location = f"http://127.0.0.1:{free_port}"
    try:
        user = str(artefacts.dataset.user_ids[40])
        response = client.get(f"/v1/users/{user}/recommendations?n=5")
        assert response.status_code == 503
        error = response.json()["error"]
        assert error["code"] == "dependency_unavailable" and "qdrant" in error["message"]
        assert "Traceback" not in response.text
        assert f"127.0.0.1:{free_port}" not in response.text  # the address is in the log only
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["store"] != "ok"
    finally:
        conn.client = embedded
    assert client.get(f"/v1/users/{user}/recommendations?n=5").status_code == 200


def test_corrupted_bundle_is_refused_with_a_clear_message(artefacts, tmp_path, caplog) -> None:
    import shutil

    root = tmp_path / "bundles"
    copy = root / artefacts.bundles["lightgcn"].name
    shutil.copytree(artefacts.bundles["lightgcn"], copy)
    (root / "current").symlink_to(copy.name)
    with (copy / "item_vectors.npy").open("r+b") as fh:
        fh.seek(-4, 2)
        fh.write(b"\x00\x00\x80\x7f")
    settings = ServiceSettings(
        bundles_root=root,
        qdrant_path=tmp_path / "q",
        online_dir=tmp_path / "online",
        redis_url=None,
        reload_interval_s=0,
        feedback_log=tmp_path / "f.jsonl",
        admin_api_key="admin",
    )
    message = "item_vectors.npy: checksum does not match the manifest"
    with caplog.at_level("ERROR", logger="service.runtime"), TestClient(create_app(settings)) as client:
        ready = client.get("/readyz").json()
        assert ready["status"] == "not_ready"
        assert ready["checks"]["bundle"] == "refused"  # a state: the reason is in the log, not public
        assert any(message in str(getattr(r, "reason", "")) for r in caplog.records)
        reload = client.post("/v1/admin/reload", headers={"X-Admin-Key": "admin"}).json()
        assert message in reload["error"]  # and in the (keyed) admin answer
