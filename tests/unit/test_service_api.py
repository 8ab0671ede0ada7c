"""The API without a model bundle: validation, errors, auth, health and metrics.

Uses the real app factory with the embedded Qdrant on a temporary path and no Redis."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.settings import ServiceSettings
from tests.unit._fakes import app_without_bundle as _app


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):
    with _app(tmp_path_factory.mktemp("service"), api_key="secret") as c:
        c.headers["X-API-Key"] = "secret"
        yield c


def test_health_is_ok_without_bundle(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readiness_explains_missing_bundle(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not_ready"
    # check names and states only: no path or exception text (those go to the log)
    assert body["checks"] == {"bundle": "missing", "store": "ok", "redis": "disabled"}
    assert "/" not in response.text.replace("application/json", "")


def test_requests_get_503_with_reason_not_500(client: TestClient) -> None:
    response = client.get("/v1/users/1/recommendations")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "not_ready"
    assert response.headers["Retry-After"] == "1"
    assert "bundles" not in response.text  # no path in the answer


WRITES = [
    ("put", "/v1/items/1", {"title": "T", "text": "t"}),
    ("delete", "/v1/items/1", None),
    ("post", "/v1/feedback", [{"user_id": "1", "item_id": "1", "type": "click"}]),
    ("get", "/v1/users/1/recommendations?explain=true", None),  # profile texts: personal data
]


def _call(client: TestClient, method: str, url: str, body: object, **headers: str):
    kwargs: dict[str, object] = {"headers": headers}
    if body is not None:
        kwargs["json"] = body
    return client.request(method.upper(), url, **kwargs)


def _assert_401(response) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("ApiKey")


def test_secure_by_default_writes_and_profile_texts_need_a_key(tmp_path: Path) -> None:
    with _app(tmp_path) as client:  # no key configured, no opt-out
        for method, url, body in WRITES:
            _assert_401(_call(client, method, url, body, **{"X-API-Key": "anything"}))
        # reads stay open (PROFILEREC_AUTH_READS): here 503, no bundle
        assert client.get("/v1/users/1/recommendations").status_code == 503


def test_writes_pass_with_the_key_only(tmp_path: Path) -> None:
    with _app(tmp_path, api_key="s3cret") as client:
        for method, url, body in WRITES:
            _assert_401(_call(client, method, url, body))
            _assert_401(_call(client, method, url, body, **{"X-API-Key": "s3cret-not"}))
            # past the key check: no bundle here, so 503 (not 401)
            assert _call(client, method, url, body, **{"X-API-Key": "s3cret"}).status_code == 503


def test_reads_can_require_the_key(tmp_path: Path) -> None:
    with _app(tmp_path, api_key="s3cret", auth_reads=True) as client:
        _assert_401(client.get("/v1/users/1/recommendations"))
        _assert_401(client.post("/v1/recommendations", json={"liked_items": ["1"]}))
        assert client.get("/v1/users/1/recommendations", headers={"X-API-Key": "s3cret"}).status_code == 503
        assert client.get("/healthz").status_code == 200  # probes stay open


def test_auth_off_is_an_explicit_opt_out(tmp_path: Path) -> None:
    with _app(tmp_path, auth="off") as client:
        for method, url, body in WRITES:
            assert _call(client, method, url, body).status_code == 503


def test_admin_routes_need_their_own_key_whatever_the_client_address(tmp_path: Path) -> None:
    spoof = {"X-Forwarded-For": "127.0.0.1", "X-Real-IP": "127.0.0.1", "Host": "localhost"}
    with _app(tmp_path, auth="off") as client:  # the TestClient's address is "testclient"
        _assert_401(client.post("/v1/admin/reload", headers=spoof))
    with _app(tmp_path, api_key="client-key", admin_api_key="admin-key") as client:
        _assert_401(client.post("/v1/admin/reload", headers={**spoof, "X-API-Key": "client-key"}))
        _assert_401(client.post("/v1/admin/reload", headers={"X-Admin-Key": "client-key"}))
        response = client.post("/v1/admin/reload", headers={"X-Admin-Key": "admin-key"})
        assert response.status_code == 200
        assert response.json()["model_version"] is None


def test_keys_are_secrets_in_settings(tmp_path: Path) -> None:
    settings = ServiceSettings(api_key="k-123", admin_api_key="a-456")
    assert "k-123" not in repr(settings) and "a-456" not in repr(settings)
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "k-123"


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
