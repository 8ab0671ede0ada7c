"""What users have seen stays seen, whatever happens to the cache; what one worker process writes,
every worker serves; a cached user vector never outlives the profiles it was computed from."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import ServiceSettings
from tests.integration.conftest import KEYS, service_settings

pytestmark = pytest.mark.integration


def _settings(artefacts, kind: str, tmp_path, redis_url: str | None) -> ServiceSettings:
    return service_settings(artefacts, kind, tmp_path, redis_url, qdrant_path=tmp_path / "qdrant")


@pytest.fixture
def flushed(redis_server) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    yield client
    client.close()


def _ids(body: dict) -> list[str]:
    return [i["item_id"] for i in body["items"]]


@pytest.mark.parametrize("kind", ["lightgcn", "multvae"])
def test_feedback_survives_a_redis_restart_a_flush_and_a_service_restart(
    kind, artefacts, redis_server, flushed, tmp_path
) -> None:
    user = str(artefacts.dataset.user_ids[1])
    settings = _settings(artefacts, kind, tmp_path, redis_server.url)
    url = f"/v1/users/{user}/recommendations?n=10"
    with TestClient(create_app(settings), headers=KEYS) as client:
        top = _ids(client.get(url).json())
        liked = top[:2]
        events = [{"user_id": user, "item_id": i, "type": "like"} for i in liked]
        assert client.post("/v1/feedback", json=events).status_code == 200
        assert not set(liked) & set(_ids(client.get(url).json()))
        redis_server.stop()
        redis_server.start()  # a new, empty Redis
        assert not set(liked) & set(_ids(client.get(url).json()))
        flushed.flushall()
        assert not set(liked) & set(_ids(client.get(url).json()))
    with TestClient(create_app(settings), headers=KEYS) as restarted:  # a new process: the log is the record
        assert not set(liked) & set(_ids(restarted.get(url).json()))
    with TestClient(create_app(_settings(artefacts, kind, tmp_path, None)), headers=KEYS) as no_cache:
        assert not set(liked) & set(_ids(no_cache.get(url).json()))


def test_a_new_user_with_feedback_is_personalised_and_never_shown_it_again(
    artefacts, redis_server, flushed, tmp_path
) -> None:
    settings = _settings(artefacts, "lightgcn", tmp_path, redis_server.url)
    with TestClient(create_app(settings), headers=KEYS) as client:
        url = "/v1/users/newbie/recommendations?n=10"
        assert client.get(url).json()["strategy"] == "popular"
        events = [{"user_id": "newbie", "item_id": i, "type": "like"} for i in ("50", "172", "181")]
        client.post("/v1/feedback", json=events)
        body = client.get(url).json()
        assert body["strategy"] == "personalized"
        assert not {"50", "172", "181"} & set(_ids(body))


def test_two_worker_processes_agree_on_items_and_feedback(artefacts, redis_server, flushed, tmp_path) -> None:
    """Two apps over the same work directory, as two uvicorn workers are: each writes, both serve."""
    settings = _settings(artefacts, "lightgcn", tmp_path, redis_server.url)
    text = "A haunted lighthouse keeper is stalked by a masked killer in this slasher horror film."
    query = {"text": text, "n": 20, "categories": ["Horror"]}
    with (
        TestClient(create_app(settings), headers=KEYS) as one,
        TestClient(create_app(settings), headers=KEYS) as two,
    ):
        put = one.put(
            "/v1/items/fresh-1", json={"title": "Lighthouse Terror", "text": text, "categories": ["Horror"]}
        )
        assert put.status_code == 201
        assert "fresh-1" in _ids(two.post("/v1/recommendations", json=query).json())
        user = str(artefacts.dataset.user_ids[5])
        url = f"/v1/users/{user}/recommendations?n=5"
        first = _ids(two.get(url).json())[0]
        assert (
            one.post("/v1/feedback", json=[{"user_id": user, "item_id": first, "type": "click"}]).status_code
            == 200
        )
        assert first not in _ids(two.get(url).json())
        assert one.delete("/v1/items/fresh-1").status_code == 204
        assert "fresh-1" not in _ids(two.post("/v1/recommendations", json=query).json())
        assert two.delete("/v1/items/fresh-1").status_code == 404
    with TestClient(create_app(settings), headers=KEYS) as restarted:
        assert "fresh-1" not in _ids(restarted.post("/v1/recommendations", json=query).json())


def test_a_cached_vector_never_outlives_a_profile_refresh(artefacts, redis_server, flushed, tmp_path) -> None:
    """The cache-aside race, interleaved by hand: a request reads the old profiles, the refresh replaces
    them and invalidates, then the request writes its (old) vector. The next read must not use it."""
    from service.online_store import upsert_profiles
    from service.schemas import ProfilesUpsertRequest

    settings = _settings(artefacts, "lightgcn", tmp_path, redis_server.url)
    user = str(artefacts.dataset.user_ids[2])
    with TestClient(create_app(settings), headers=KEYS) as client:
        rt = client.app.state.runtime  # type: ignore[attr-defined]
        live = rt.holder.current
        tag = f"0|{live.profiles.revision('user', user)}"

        async def interleave() -> tuple[object, object]:
            vector, token = await rt.cache.get_user_vector(live.version, user, tag)  # the request misses
            assert vector is None and token is not None
            old = np.ones(live.bundle.manifest.item_dim, np.float32)  # what it computed from old profiles
            dim = live.bundle.manifest.profiles.text_dim
            request = ProfilesUpsertRequest(
                entity_type="user",
                store_version=live.bundle.manifest.profiles.store_version,
                profiles=[
                    {
                        "entity_id": user,
                        "vectors": [[0.1] * dim],
                        "texts": ["refreshed"],
                        "labels": [{"source": "llm", "grounded": True, "grounded_on": []}],
                    }
                ],
            )
            await upsert_profiles(rt, request)  # the refresh lands in between
            await rt.cache.put_user_vector(live.version, user, token, tag, old)  # the request writes late
            new_tag = f"0|{live.profiles.revision('user', user)}"
            return await rt.cache.get_user_vector(live.version, user, new_tag)

        vector, _ = client.portal.call(interleave)  # type: ignore[union-attr]
        assert vector is None  # the late write is a miss, not a stale hit
        body = client.get(f"/v1/users/{user}/recommendations?n=3&explain=true").json()
        assert body["user_profiles"] == ["refreshed"]


def test_kept_candidates_follow_deletions_and_edits(artefacts, redis_server, flushed, tmp_path) -> None:
    """A user asking again is answered from kept candidates; an item deleted or edited through the API
    (by another worker) is reflected in the very next answer."""
    settings = _settings(artefacts, "multvae", tmp_path, redis_server.url)
    user = str(artefacts.dataset.user_ids[8])
    url = f"/v1/users/{user}/recommendations?n=5"
    with (
        TestClient(create_app(settings), headers=KEYS) as one,
        TestClient(create_app(settings), headers=KEYS) as two,
    ):
        first = two.get(url).json()["items"]
        assert two.get(url).json()["items"] == first  # the second answer comes from the kept candidates
        edited = {"title": "Renamed", "text": "a new description", "categories": ["Documentary"]}
        assert one.put(f"/v1/items/{first[1]['item_id']}", json=edited).status_code == 200
        again = two.get(url).json()["items"]
        assert again[1]["item_id"] == first[1]["item_id"] and again[1]["title"] == "Renamed"
        assert one.delete(f"/v1/items/{first[0]['item_id']}").status_code == 204
        after = [i["item_id"] for i in two.get(url).json()["items"]]
        assert first[0]["item_id"] not in after and len(after) == 5
