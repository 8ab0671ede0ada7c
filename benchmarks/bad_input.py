"""A corpus of malformed, hostile and borderline requests, run against a live service over HTTP.

Each case names what it sends (method, URL, headers, raw body bytes, or a chunked body with no
``Content-Length``) and the statuses that are correct for it. :func:`run_corpus` sends every case and
reports, per case, the status and whether the answer is a JSON error of the service's schema
(``{"error": {"code": str, "message": str, ...}}``). The integration test
(``tests/integration/test_bad_input.py``) requires every status to be an expected one, no 5xx and
every error to be JSON; ``python -m benchmarks resilience`` records the counts.

The cases cover what a fuzzer and a careless client send: NaN/Infinity, out-of-range timestamps,
control characters (NUL, ESC/ANSI, C1) in ids, titles and categories, wrong types, unknown fields,
unknown categories and feedback types, comma-separated lists, bodies above the size limit (declared,
whitespace-padded and chunked), bad JSON, wrong content types, over-long URLs, bad and missing keys.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

CLIENT_ERRORS = frozenset(range(400, 500))


@dataclass
class Case:
    name: str
    method: str
    url: str
    expect: frozenset[int]
    body: bytes | None = None
    chunked: bool = False  # send the body in chunks without Content-Length
    headers: dict[str, str] = field(default_factory=dict)
    key: bool = True  # send the API and admin keys


@dataclass
class Outcome:
    case: Case
    status: int
    json_error: bool  # the body is {"error": {"code": str, "message": str, ...}}
    expected: bool
    body: str


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _raw_event(value_token: str) -> bytes:
    """A feedback batch whose value is a raw token (NaN, Infinity ...: not valid JSON, but what
    Python's json module writes and reads)."""
    return f'[{{"user_id": "1", "item_id": "50", "type": "rating", "value": {value_token}}}]'.encode()


def corpus(
    user: str = "1",
    item: str = "50",
    max_body_bytes: int = 2 * 1024 * 1024,
    categories: tuple[str, str] = ("Action", "Comedy"),
) -> list[Case]:
    """The cases, for a service whose catalogue has ``item`` and ``categories`` and knows ``user``."""
    c1, c2 = categories

    def _event(**overrides: Any) -> dict[str, Any]:
        return {"user_id": user, "item_id": item, "type": "click", **overrides}

    u = f"/v1/users/{user}/recommendations"
    it = f"/v1/items/{item}"
    ok, bad, v422 = frozenset({200}), CLIENT_ERRORS, frozenset({422})
    cases: list[Case] = []

    def add(
        name: str,
        method: str,
        url: str,
        expect: frozenset[int],
        body: Any = None,
        ctype: str | None = "application/json",
        **kw: Any,
    ) -> None:
        raw = body if isinstance(body, bytes) or body is None else _json(body)
        headers = {"Content-Type": ctype} if raw is not None and ctype else {}
        cases.append(Case(name, method, url, expect, raw, headers={**headers, **kw.pop("headers", {})}, **kw))

    # --- feedback: values, timestamps, types
    for token in ("NaN", "Infinity", "-Infinity", "1e999", "-1e999"):
        add(f"feedback value {token}", "POST", "/v1/feedback", v422, _raw_event(token))
    for stamp in (
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "1969-12-31T23:59:59Z",
        "2999-01-01T00:00:00Z",
        "yesterday",
        "",
        "2024-02-30T00:00:00Z",
    ):
        add(f"feedback timestamp {stamp!r}", "POST", "/v1/feedback", v422, [_event(timestamp=stamp)])
    add("feedback timestamp now", "POST", "/v1/feedback", ok, [_event(timestamp="2025-06-01T12:00:00Z")])
    for kind in ("Bad Type", "CLICK", "x" * 40, "hover", "", "click\u0000", "1click"):
        add(f"feedback type {kind[:12]!r}", "POST", "/v1/feedback", v422, [_event(type=kind)])
    for kind_value in (123, None, ["click"], {"a": 1}):
        add(f"feedback type {kind_value!r}", "POST", "/v1/feedback", v422, [_event(type=kind_value)])
    # --- feedback: ids
    hostile = {
        "NUL": "a\u0000b",
        "ESC/ANSI": "\u001b[31mred\u001b[0m",
        "C1 NEL": "a\u0085b",
        "DEL": "a\u007fb",
        "newline": "a\nb",
        "tab": "a\tb",
        "bell": "\u0007",
    }
    for label, value in hostile.items():
        add(f"feedback user_id {label}", "POST", "/v1/feedback", v422, [_event(user_id=value)])
        add(f"feedback item_id {label}", "POST", "/v1/feedback", v422, [_event(item_id=value)])
    wrong_ids: dict[str, object] = {
        "empty": "",
        "blank": "   ",
        "129 chars": "u" * 129,
        "int": 5,
        "null": None,
    }
    for label, wrong in wrong_ids.items():
        add(f"feedback user_id {label}", "POST", "/v1/feedback", v422, [_event(user_id=wrong)])
    add("feedback unknown item", "POST", "/v1/feedback", v422, [_event(item_id="no-such-item-xyz")])
    add("feedback extra field", "POST", "/v1/feedback", v422, [_event(surprise=1)])
    add("feedback value string", "POST", "/v1/feedback", v422, [_event(value="high")])
    # --- feedback: body shapes
    add("feedback object not array", "POST", "/v1/feedback", v422, _event())
    add("feedback empty array", "POST", "/v1/feedback", v422, [])
    add("feedback 1001 events", "POST", "/v1/feedback", v422, [_event()] * 1001)
    add("feedback string body", "POST", "/v1/feedback", v422, "click")
    add("feedback null body", "POST", "/v1/feedback", v422, b"null")
    add("feedback array of ints", "POST", "/v1/feedback", v422, [1, 2])
    add("feedback nested arrays", "POST", "/v1/feedback", bad, b"[" * 5000 + b"]" * 5000)
    add("feedback deep object", "POST", "/v1/feedback", bad, b'[{"a":' * 3000 + b"1" + b"}" * 3000 + b"]")
    # --- bad JSON and content types
    for label, raw in {
        "truncated": b'[{"user_id": "1"',
        "trailing comma": b'[{"user_id": "1", "item_id": "50", "type": "click",}]',
        "single quotes": b"[{'user_id': '1'}]",
        "invalid utf-8": b'[{"user_id": "\xff\xfe", "item_id": "50", "type": "click"}]',
        "empty": b"",
        "only whitespace": b"    \n\t  ",
        "comment": b'[/* hi */ {"user_id": "1", "item_id": "50", "type": "click"}]',
    }.items():
        add(f"bad JSON: {label}", "POST", "/v1/feedback", bad, raw)
    for ctype in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "a/b",
    ):
        add(f"content-type {ctype}", "POST", "/v1/feedback", bad, [_event()], ctype=ctype)
    add("no content-type", "POST", "/v1/feedback", bad, [_event()], ctype=None)
    # a UTF-8 byte order mark: JSON parsers may ignore it (RFC 8259), so accepted or refused, never 5xx
    add("JSON with a BOM", "POST", "/v1/feedback", bad | ok, b"\xef\xbb\xbf" + _json([_event()]))
    # --- size limits (before parsing)
    too_big = max_body_bytes + 1024
    add(
        "body over the limit (Content-Length)",
        "POST",
        "/v1/feedback",
        frozenset({413}),
        [_event()] * (too_big // 50),
    )
    add(
        "whitespace-padded body over the limit",
        "POST",
        "/v1/feedback",
        frozenset({413}),
        b" " * too_big + _json([_event()]),
    )
    add(
        "chunked body over the limit",
        "POST",
        "/v1/feedback",
        frozenset({413}),
        b" " * too_big + b"[]",
        chunked=True,
    )
    add(
        "chunked body under the limit",
        "POST",
        "/v1/feedback",
        ok,
        _json([_event(item_id=item)]),
        chunked=True,
    )
    add(
        "chunked cold start over the limit",
        "POST",
        "/v1/recommendations",
        frozenset({413}),
        b'{"text": "' + b"a" * too_big + b'"}',
        chunked=True,
    )
    add(
        "item text over the limit",
        "PUT",
        "/v1/items/fresh-big",
        frozenset({413}),
        {"title": "t", "text": "a" * too_big},
    )
    add("URL over the limit", "GET", f"{u}?exclude={'1,' * 5000}1", frozenset({414}))
    add(
        "user id of 10k chars in the path",
        "GET",
        f"/v1/users/{'u' * 10000}/recommendations",
        frozenset({414}),
    )
    # --- recommendations: n, categories, exclude, ids, explain
    for n in ("0", "-1", "101", "1001", "100000", "1e3", "abc", "NaN", "", "2.5"):
        add(f"n={n!r}", "GET", f"{u}?n={quote(n)}", v422)
    add("n=100", "GET", f"{u}?n=100", ok)
    add("category unknown", "GET", f"{u}?category=NoSuchGenre", v422)
    add("category one unknown of two", "GET", f"{u}?category={c1},NoSuchGenre", v422)
    add("category comma-separated", "GET", f"{u}?category={c1},{c2}", ok)
    add("category repeated", "GET", f"{u}?category={c1}&category={c2}", ok)
    add("category empty", "GET", f"{u}?category=", v422)
    add("category NUL", "GET", f"{u}?category=Act%00ion", v422)
    add("category ANSI", "GET", f"{u}?category=%1B%5B31m", v422)
    add("51 categories", "GET", f"{u}?category={','.join([c1] * 51)}", v422)
    add("exclude comma-separated", "GET", f"{u}?exclude=1,2,3", ok)
    add("exclude repeated", "GET", f"{u}?exclude=1&exclude=2", ok)
    add("exclude empty values", "GET", f"{u}?exclude=,,", v422)
    add("exclude 1001 ids", "GET", f"{u}?exclude={','.join(str(i) for i in range(1001))}", v422)
    add("exclude id of 129 chars", "GET", f"{u}?exclude={'x' * 129}", v422)
    add("exclude NUL", "GET", f"{u}?exclude=1%002", v422)
    add("user id NUL", "GET", "/v1/users/a%00b/recommendations", v422)
    add("user id ESC", "GET", "/v1/users/%1B%5B2J/recommendations", v422)
    add("user id C1", "GET", "/v1/users/a%C2%85b/recommendations", v422)
    add("user id 129 chars", "GET", f"/v1/users/{'u' * 129}/recommendations", v422)
    add("unknown user", "GET", "/v1/users/nobody-at-all/recommendations", ok)
    add("explain=maybe", "GET", f"{u}?explain=maybe", v422)
    add("explain=true without a key", "GET", f"{u}?explain=true", frozenset({401}), key=False)
    add("explain=true with the key", "GET", f"{u}?explain=true", ok)
    # --- cold start
    add("cold start empty", "POST", "/v1/recommendations", v422, {})
    add("cold start blank text", "POST", "/v1/recommendations", v422, {"text": "   "})
    add("cold start text 4001", "POST", "/v1/recommendations", v422, {"text": "a" * 4001})
    add("cold start text NUL", "POST", "/v1/recommendations", v422, {"text": "space\u0000opera"})
    add("cold start text ANSI", "POST", "/v1/recommendations", v422, {"text": "\u001b[2Jspace"})
    add("cold start text newline", "POST", "/v1/recommendations", ok, {"text": "space\nopera\tfilms"})
    add("cold start n 101", "POST", "/v1/recommendations", v422, {"liked_items": [item], "n": 101})
    add("cold start n NaN", "POST", "/v1/recommendations", v422, b'{"liked_items": ["50"], "n": NaN}')
    add("cold start n string", "POST", "/v1/recommendations", v422, {"liked_items": [item], "n": "five"})
    add(
        "cold start unknown liked", "POST", "/v1/recommendations", v422, {"liked_items": ["no-such-item-xyz"]}
    )
    add("cold start 201 liked", "POST", "/v1/recommendations", v422, {"liked_items": [item] * 201})
    add(
        "cold start unknown category",
        "POST",
        "/v1/recommendations",
        v422,
        {"liked_items": [item], "categories": ["NoSuchGenre"]},
    )
    add(
        "cold start category with comma",
        "POST",
        "/v1/recommendations",
        v422,
        {"liked_items": [item], "categories": [f"{c1},{c2}"]},
    )
    add("cold start extra field", "POST", "/v1/recommendations", v422, {"liked_items": [item], "bogus": 1})
    add("cold start liked not a list", "POST", "/v1/recommendations", v422, {"liked_items": item})
    # --- items
    good_item = {"title": "A title", "text": "A description", "categories": ["Drama"]}
    for label, value in hostile.items():
        # titles are one line: not even tabs or line breaks (those are for the free text)
        add(f"item title {label}", "PUT", "/v1/items/fresh-t", v422, {**good_item, "title": f"T{value}"})
        add(
            f"item category {label}",
            "PUT",
            "/v1/items/fresh-c",
            v422,
            {**good_item, "categories": [f"C{value}"]},
        )
    add("item text NUL", "PUT", "/v1/items/fresh-x", v422, {**good_item, "text": "a\u0000b"})
    add("item id NUL", "PUT", "/v1/items/a%00b", v422, good_item)
    add("item id ANSI", "PUT", "/v1/items/%1B%5B31m", v422, good_item)
    add("item id 129 chars", "PUT", f"/v1/items/{'i' * 129}", v422, good_item)
    add("item empty title", "PUT", "/v1/items/fresh-e", v422, {**good_item, "title": ""})
    add("item title 301", "PUT", "/v1/items/fresh-e", v422, {**good_item, "title": "t" * 301})
    add("item no text", "PUT", "/v1/items/fresh-e", v422, {"title": "t"})
    add(
        "item 21 categories",
        "PUT",
        "/v1/items/fresh-e",
        v422,
        {**good_item, "categories": [f"c{i}" for i in range(21)]},
    )
    add("item category 65 chars", "PUT", "/v1/items/fresh-e", v422, {**good_item, "categories": ["c" * 65]})
    add("item category with comma", "PUT", "/v1/items/fresh-e", v422, {**good_item, "categories": ["Sci,Fi"]})
    add("item title int", "PUT", "/v1/items/fresh-e", v422, {**good_item, "title": 5})
    add("item title NaN", "PUT", "/v1/items/fresh-e", v422, b'{"title": NaN, "text": "x"}')
    add("item without key", "PUT", it, frozenset({401}), good_item, key=False)
    add("item delete without key", "DELETE", it, frozenset({401}), key=False)
    add("item delete unknown", "DELETE", "/v1/items/no-such-item-xyz", frozenset({404}))
    add("item new", "PUT", "/v1/items/fresh-ok", frozenset({201}), good_item)
    add("item PATCH", "PATCH", it, frozenset({405}), good_item)
    add("feedback without key", "POST", "/v1/feedback", frozenset({401}), [_event()], key=False)
    add(
        "feedback wrong key",
        "POST",
        "/v1/feedback",
        frozenset({401}),
        [_event()],
        key=False,
        headers={"X-API-Key": "guess"},
    )
    # --- admin
    add("admin reload without key", "POST", "/v1/admin/reload", frozenset({401}), key=False)
    add(
        "admin reload with the client key",
        "POST",
        "/v1/admin/reload",
        frozenset({401}),
        key=False,
        headers={"X-API-Key": "x", "X-Forwarded-For": "127.0.0.1"},
    )
    add(
        "admin profiles NaN vector",
        "POST",
        "/v1/admin/profiles",
        v422,
        b'{"entity_type": "user", "store_version": "x", '
        b'"profiles": [{"entity_id": "1", "vectors": [[NaN]], "texts": ["t"]}]}',
    )
    add(
        "admin profiles wrong store version",
        "POST",
        "/v1/admin/profiles",
        frozenset({400}),
        {
            "entity_type": "user",
            "store_version": "not-live",
            "profiles": [{"entity_id": "1", "vectors": [[0.1]], "texts": ["t"]}],
        },
    )
    add(
        "admin profiles misaligned",
        "POST",
        "/v1/admin/profiles",
        v422,
        {
            "entity_type": "user",
            "store_version": "x",
            "profiles": [{"entity_id": "1", "vectors": [[0.1], [0.2]], "texts": ["t"]}],
        },
    )
    # --- routes
    add("unknown route", "GET", "/v1/nope", frozenset({404}))
    add("unknown route with a body", "POST", "/v1/nope", frozenset({404}), {"a": 1})
    add("GET on feedback", "GET", "/v1/feedback", frozenset({405}))
    return cases


def _chunks(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def is_json_error(response: httpx.Response) -> bool:
    if not response.headers.get("content-type", "").startswith("application/json"):
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    error = body.get("error") if isinstance(body, dict) else None
    return (
        isinstance(error, dict)
        and isinstance(error.get("code"), str)
        and isinstance(error.get("message"), str)
    )


def run_corpus(base_url: str, keys: dict[str, str], cases: list[Case]) -> list[Outcome]:
    """Send every case (a fresh connection each: a refused body may close it)."""
    outcomes = []
    for case in cases:
        headers = {**(keys if case.key else {}), **case.headers}
        content: Any = case.body
        if case.chunked and case.body is not None:
            content = _chunks(case.body)
        with httpx.Client(base_url=base_url, timeout=60) as client:
            response = client.request(case.method, case.url, content=content, headers=headers)
        json_error = response.status_code < 400 or is_json_error(response)
        outcomes.append(
            Outcome(
                case,
                response.status_code,
                json_error,
                response.status_code in case.expect,
                response.text[:300],
            )
        )
    return outcomes


def summarise(outcomes: list[Outcome]) -> dict[str, int]:
    return {
        "cases": len(outcomes),
        "2xx": sum(200 <= o.status < 300 for o in outcomes),
        "4xx": sum(400 <= o.status < 500 for o in outcomes),
        "5xx": sum(o.status >= 500 for o in outcomes),
        "non_json_errors": sum(not o.json_error for o in outcomes),
        "unexpected_status": sum(not o.expected for o in outcomes),
    }
