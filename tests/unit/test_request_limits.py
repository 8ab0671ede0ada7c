"""Limits before parsing and the contract of errors, on the real app without a bundle: bodies above the
limit are 413 whether declared or chunked (and before the key check or the JSON parser), long URLs
414, NaN/Infinity, control characters, implausible timestamps and unknown feedback types 422, one
status per error class, and the OpenAPI document states all of it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.limits import MAX_FEEDBACK_BATCH, MAX_N
from tests.unit._fakes import app_without_bundle

LIMIT = 4096


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    limits = {"max_body_bytes": LIMIT, "max_url_chars": 2048}
    with app_without_bundle(tmp_path_factory.mktemp("limits"), api_key="k", **limits) as c:
        c.headers["X-API-Key"] = "k"
        yield c


def _error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code and isinstance(error["message"], str)
    return error


def test_declared_body_over_the_limit_is_413_before_the_key_check(client: TestClient) -> None:
    body = b"[" + b" " * LIMIT + b"]"
    _error(
        client.post("/v1/feedback", content=body, headers={"X-API-Key": "wrong"}), 413, "payload_too_large"
    )
    _error(client.put("/v1/items/x", content=b"{" + b" " * LIMIT + b"}"), 413, "payload_too_large")


def test_chunked_body_over_the_limit_is_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"["
        for _ in range(10):
            yield b" " * 1024  # whitespace: valid JSON padding, refused by size alone
        yield b"]"

    response = client.post("/v1/feedback", content=chunks(), headers={"Content-Type": "application/json"})
    _error(response, 413, "payload_too_large")


def test_body_under_the_limit_reaches_the_parser(client: TestClient) -> None:
    response = client.post("/v1/feedback", content=b"[ ]", headers={"Content-Type": "application/json"})
    _error(response, 422, "validation_error")


def test_long_url_is_414_json(client: TestClient) -> None:
    _error(client.get("/v1/users/1/recommendations?exclude=" + "1," * 1500), 414, "uri_too_long")


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_are_refused(client: TestClient, token: str) -> None:
    raw = f'[{{"user_id": "1", "item_id": "2", "type": "rating", "value": {token}}}]'
    response = client.post("/v1/feedback", content=raw, headers={"Content-Type": "application/json"})
    error = _error(response, 422, "validation_error")
    assert error["details"]["problems"][0]["field"] == "body.0.value"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("user_id", "a\x00b"),
        ("item_id", "\x1b[31mred"),
        ("user_id", "a\x85b"),
        ("item_id", "a\x7f"),
        ("timestamp", "0001-01-01T00:00:00Z"),
        ("timestamp", "9999-12-31T00:00:00Z"),
        ("timestamp", "1969-12-31T23:59:59Z"),
    ],
)
def test_feedback_fields_are_checked(client: TestClient, field: str, value: str) -> None:
    event = {"user_id": "1", "item_id": "2", "type": "click", field: value}
    error = _error(client.post("/v1/feedback", json=[event]), 422, "validation_error")
    assert error["details"]["problems"][0]["field"] == f"body.0.{field}"


def test_unknown_feedback_type_is_422_with_the_valid_ones(client: TestClient) -> None:
    event = {"user_id": "1", "item_id": "2", "type": "hover"}
    error = _error(client.post("/v1/feedback", json=[event]), 422, "validation_error")
    assert "click" in error["details"]["valid"] and "hover" not in error["details"]["valid"]


@pytest.mark.parametrize(
    ("title", "categories"),
    [("a\x00b", []), ("\x1b[2J", []), ("T", ["Dra\x00ma"]), ("T", ["Sci,Fi"]), ("a\nb", [])],
)
def test_control_characters_are_refused_in_items(
    client: TestClient, title: str, categories: list[str]
) -> None:
    body = {"title": title, "text": "a description", "categories": categories}
    _error(client.put("/v1/items/x", json=body), 422, "validation_error")
    _error(client.put("/v1/items/a%00b", json={"title": "T", "text": "t"}), 422, "validation_error")


@pytest.mark.parametrize("n", [0, MAX_N + 1, 1001, 100_000])
def test_n_out_of_range_is_422_wherever_it_is(client: TestClient, n: int) -> None:
    _error(client.get(f"/v1/users/1/recommendations?n={n}"), 422, "validation_error")
    _error(client.post("/v1/recommendations", json={"liked_items": ["1"], "n": n}), 422, "validation_error")


def test_a_lowered_max_n_is_422_too(tmp_path: Path) -> None:
    with app_without_bundle(tmp_path, max_n=10) as c:
        error = _error(c.get("/v1/users/1/recommendations?n=11"), 422, "validation_error")
        assert error["details"]["limit"] == 10


def test_comma_and_empty_query_values(client: TestClient) -> None:
    _error(client.get("/v1/users/1/recommendations?exclude=,,"), 422, "validation_error")
    _error(
        client.get("/v1/users/1/recommendations?category=" + ",".join(["A"] * 51)), 422, "validation_error"
    )
    # well-formed lists pass validation (no bundle here: 503)
    assert client.get("/v1/users/1/recommendations?exclude=1,2&category=A,B").status_code == 503


def test_openapi_states_statuses_limits_and_the_error_schema(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    error_ref = "#/components/schemas/ErrorResponse"
    keyed = {
        ("/v1/items/{item_id}", "put"),
        ("/v1/items/{item_id}", "delete"),
        ("/v1/feedback", "post"),
        ("/v1/users/{user_id}/recommendations", "get"),
        ("/v1/admin/profiles", "post"),
        ("/v1/admin/reload", "post"),
    }
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            responses = operation["responses"]
            if not path.startswith("/v1/"):
                continue
            for status in ("413", "414", "422"):
                schema = responses[status]["content"]["application/json"]["schema"]
                assert schema["$ref"] == error_ref, (path, method, status)
            assert "HTTPValidationError" not in json.dumps(operation)
            if (path, method) in keyed:
                assert "401" in responses, (path, method)
    assert "201" in spec["paths"]["/v1/items/{item_id}"]["put"]["responses"]
    assert "404" in spec["paths"]["/v1/items/{item_id}"]["delete"]["responses"]
    assert "503" in spec["paths"]["/v1/users/{user_id}/recommendations"]["get"]["responses"]
    n = next(
        p
        for p in spec["paths"]["/v1/users/{user_id}/recommendations"]["get"]["parameters"]
        if p["name"] == "n"
    )
    assert n["schema"]["maximum"] == MAX_N
    body = spec["paths"]["/v1/feedback"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["maxItems"] == MAX_FEEDBACK_BATCH
    assert spec["components"]["schemas"]["ColdStartRequest"]["properties"]["n"]["maximum"] == MAX_N
    assert {"ApiKey", "AdminKey"} <= set(spec["components"]["securitySchemes"])


def test_openapi_states_the_live_limits(tmp_path: Path) -> None:
    with app_without_bundle(tmp_path, max_n=10, max_feedback_batch=50, feedback_types="click,like") as c:
        spec = c.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert schemas["FeedbackEvent"]["properties"]["type"]["enum"] == ["click", "like"]
    assert schemas["ColdStartRequest"]["properties"]["n"]["maximum"] == 10
    get = spec["paths"]["/v1/users/{user_id}/recommendations"]["get"]
    assert next(p for p in get["parameters"] if p["name"] == "n")["schema"]["maximum"] == 10
    body = spec["paths"]["/v1/feedback"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["maxItems"] == 50
