"""The API without a model bundle: validation, errors, auth, health and metrics.

Uses the real app factory with the embedded Qdrant on a temporary path and no Redis."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import ServiceSettings


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):
    tmp_path = tmp_path_factory.mktemp("service")
    settings = ServiceSettings(
        bundles_root=tmp_path / "bundles",
        qdrant_path=tmp_path / "qdrant",
        redis_url=None,
        reload_interval_s=0,
        feedback_log=tmp_path / "feedback.jsonl",
        api_key="secret",
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        c.headers["X-API-Key"] = "secret"
        yield c


def test_health_is_ok_without_bundle(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readiness_explains_missing_bundle(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not_ready"
    assert "no such bundle pointer" in body["checks"]["bundle"]
    assert body["checks"]["store"].startswith("ok")
    assert body["checks"]["redis"].startswith("disabled")


def test_requests_get_503_with_reason_not_500(client: TestClient) -> None:
    response = client.get("/v1/users/1/recommendations")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "not_ready"
    assert response.headers["Retry-After"] == "1"


def test_auth_required_when_configured(client: TestClient) -> None:
    response = client.get("/v1/users/1/recommendations", headers={"X-API-Key": "wrong"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert client.get("/healthz", headers={"X-API-Key": "wrong"}).status_code == 200


@pytest.mark.parametrize(
    ("method", "url", "body", "field"),
    [
        ("get", "/v1/users/1/recommendations?n=abc", None, "query.n"),
        ("get", "/v1/users/1/recommendations?n=0", None, "query.n"),
        ("get", "/v1/users/1/recommendations?n=100000", None, "query.n"),
        ("post", "/v1/recommendations", {}, "body"),
        ("post", "/v1/recommendations", {"text": "   "}, "body.text"),
        ("post", "/v1/recommendations", {"liked_items": ["1"], "surprise": 1}, "body.surprise"),
        ("put", "/v1/items/x", {"title": "", "text": "t"}, "body.title"),
        ("put", "/v1/items/x", {"title": "T"}, "body.text"),
        ("post", "/v1/feedback", [], "body"),
        ("post", "/v1/feedback", [{"user_id": "1", "item_id": "2", "type": "Bad Type"}], "body.0.type"),
        (
            "post",
            "/v1/feedback",
            [{"user_id": "1", "item_id": "2", "type": "click", "timestamp": "yesterday"}],
            "body.0.timestamp",
        ),
    ],
)
def test_bad_input_is_422_with_the_field(client: TestClient, method: str, url: str, body, field: str) -> None:
    response = getattr(client, method)(url, json=body) if body is not None else getattr(client, method)(url)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert any(p["field"].startswith(field) for p in error["details"]["problems"]), error


def test_unknown_route_is_json_404(client: TestClient) -> None:
    response = client.get("/v1/nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_metrics_expose_route_templates(client: TestClient) -> None:
    client.get("/v1/users/12345/recommendations")
    text = client.get("/metrics").text
    assert 'route="/v1/users/{user_id}/recommendations"' in text
    assert "12345" not in text
    assert "profilerec_errors_total" in text


def test_openapi_documents_the_api(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/v1/users/{user_id}/recommendations",
        "/v1/recommendations",
        "/v1/items/{item_id}",
        "/v1/feedback",
        "/readyz",
    ):
        assert path in paths
    assert {"put", "delete"} <= set(paths["/v1/items/{item_id}"])
    answer = paths["/v1/users/{user_id}/recommendations"]["get"]["responses"]["200"]["content"]
    assert answer["application/json"]["schema"]["$ref"].endswith("/RecommendationResponse")
