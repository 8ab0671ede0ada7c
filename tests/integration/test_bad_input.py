"""Bad input against the live app over HTTP (a real uvicorn on a scratch deployment): the corpus of
``benchmarks/bad_input.py`` (over 100 malformed, hostile and borderline requests) gets its expected
statuses, no 5xx, and JSON errors of the documented schema; what was refused left no trace in the
logs; categories, comma-separated lists, feedback types and the per-user cap behave as documented;
item metadata has one source for every answer path."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from benchmarks.bad_input import corpus, run_corpus, summarise
from service.app import create_app
from tests.integration.conftest import KEYS, ThreadedServer

pytestmark = pytest.mark.integration

CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _strict_json(line: str) -> object:
    def refuse(token: str) -> object:
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(line, parse_constant=refuse)


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def test_bad_input_corpus_is_refused_cleanly(live_env, free_port: int) -> None:
    settings = live_env.service_settings()
    cases = corpus(user="1", item="50", max_body_bytes=settings.max_body_bytes)
    assert len(cases) >= 100
    with ThreadedServer(create_app(settings), free_port) as server:
        outcomes = run_corpus(server.url, KEYS, cases)
        metrics = httpx.get(f"{server.url}/metrics").text
    summary = summarise(outcomes)
    wrong = [
        f"{o.case.name}: {o.status} {o.body[:200]}" for o in outcomes if not o.expected or not o.json_error
    ]
    assert not wrong, "\n".join(wrong)
    assert summary["5xx"] == 0 and summary["non_json_errors"] == 0, summary
    assert summary["4xx"] >= 100
    # nothing refused reached the logs: they parse as strict JSON, with no control characters
    for log in (live_env.feedback_log, live_env.catalog_log):
        for line in log.read_text().splitlines():
            assert not any(CONTROL.search(text) for text in _strings(_strict_json(line))), line
    # the feedback type label has only configured values
    types = set(re.findall(r'profilerec_feedback_events_total\{type="([^"]*)"\}', metrics))
    assert types and types <= settings.feedback_types


def test_categories_exclude_lists_and_feedback_types(live_env, free_port: int) -> None:
    settings = live_env.service_settings(feedback_types="click,like")
    with (
        ThreadedServer(create_app(settings), free_port) as server,
        httpx.Client(base_url=server.url, headers=KEYS, timeout=60) as http,
    ):
        unknown = http.get("/v1/users/1/recommendations", params={"category": "NoSuchGenre"})
        assert unknown.status_code == 422
        details = unknown.json()["error"]["details"]
        assert details["unknown"] == ["NoSuchGenre"] and "Action" in details["valid"]
        # a category given to an item through the API becomes valid at once
        body = {"title": "Lighthouse Keeper", "text": "A keeper alone at sea.", "categories": ["Maritime"]}
        assert http.put("/v1/items/fresh-maritime", json=body).status_code == 201
        found = http.get("/v1/users/1/recommendations", params={"category": "Maritime", "n": 5}).json()
        assert [i["item_id"] for i in found["items"]] == ["fresh-maritime"]
        # comma-separated and repeated exclusions are the same thing
        top = [i["item_id"] for i in http.get("/v1/users/1/recommendations?n=5").json()["items"]]
        for query in (f"exclude={top[0]},{top[1]}", f"exclude={top[0]}&exclude={top[1]}"):
            again = [
                i["item_id"] for i in http.get(f"/v1/users/1/recommendations?n=5&{query}").json()["items"]
            ]
            assert top[0] not in again and top[1] not in again and top[2] in again
        # feedback types come from the configured set (a bounded Prometheus label)
        refused = http.post("/v1/feedback", json=[{"user_id": "1", "item_id": "50", "type": "purchase"}])
        assert refused.status_code == 422
        assert refused.json()["error"]["details"]["valid"] == ["click", "like"]


def test_per_user_feedback_cap_keeps_every_acknowledged_item_excluded(live_env, free_port: int) -> None:
    settings = live_env.service_settings(max_feedback_items_per_user=3)
    with (
        ThreadedServer(create_app(settings), free_port) as server,
        httpx.Client(base_url=server.url, headers=KEYS, timeout=60) as http,
    ):
        user = "cap-user"
        events = [{"user_id": user, "item_id": i, "type": "click"} for i in ("50", "100", "181")]
        assert http.post("/v1/feedback", json=events).json() == {"accepted": 3}
        assert http.post("/v1/feedback", json=events[:1]).status_code == 200  # the same item again
        over = http.post("/v1/feedback", json=[{"user_id": user, "item_id": "1", "type": "click"}])
        assert over.status_code == 422 and over.json()["error"]["details"]["limit"] == 3
        items = {i["item_id"] for i in http.get(f"/v1/users/{user}/recommendations?n=100").json()["items"]}
        assert not items & {"50", "100", "181"}
    logged = [json.loads(line) for line in live_env.feedback_log.read_text().splitlines()]
    assert {e["item_id"] for e in logged if e["user_id"] == user} == {"50", "100", "181"}


@pytest.mark.parametrize("engine", ["auto", "qdrant"])
def test_item_metadata_has_one_source_for_every_answer_path(live_env, free_port: int, engine: str) -> None:
    """After PUT /v1/items/<catalogue id>, popular and personalised answers show the same new title
    (and categories); after DELETE the item is in neither."""
    settings = live_env.service_settings(engine=engine)
    with (
        ThreadedServer(create_app(settings), free_port) as server,
        httpx.Client(base_url=server.url, headers=KEYS, timeout=60) as http,
    ):
        popular = http.get("/v1/users/nobody-yet/recommendations?n=3").json()
        assert popular["strategy"] == "popular"
        target = popular["items"][0]["item_id"]
        user = None
        for candidate in range(1, 200):  # a user whose personalised top-100 holds the popular item
            answer = http.get(f"/v1/users/{candidate}/recommendations?n=100").json()
            if answer["strategy"] == "personalized" and target in {i["item_id"] for i in answer["items"]}:
                user = str(candidate)
                break
        assert user is not None
        edit = {"title": "Renamed Through The API", "text": "A new description.", "categories": ["Renamed"]}
        assert http.put(f"/v1/items/{target}", json=edit).status_code == 200

        def shown(url: str) -> list[tuple[str, list[str]]]:
            items = http.get(url).json()["items"]
            return [(i["title"], i["categories"]) for i in items if i["item_id"] == target]

        expected = [("Renamed Through The API", ["Renamed"])]
        assert shown("/v1/users/nobody-yet/recommendations?n=3") == expected
        assert shown(f"/v1/users/{user}/recommendations?n=100") == expected
        assert shown("/v1/users/nobody-yet/recommendations?n=3&category=Renamed") == expected
        cold = http.post("/v1/recommendations", json={"text": "a new description", "n": 100}).json()
        assert [(i["title"], i["categories"]) for i in cold["items"] if i["item_id"] == target] in (
            [],
            expected,
        )
        assert http.delete(f"/v1/items/{target}").status_code == 204
        assert shown("/v1/users/nobody-yet/recommendations?n=3") == []
        assert shown(f"/v1/users/{user}/recommendations?n=100") == []
        assert http.delete(f"/v1/items/{target}", headers={"X-API-Key": "wrong"}).status_code == 401
