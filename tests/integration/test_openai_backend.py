"""The OpenAI-compatible path (the official ``openai`` SDK) end to end against a fake server speaking
real HTTP: chat and embeddings, 429 then success (Retry-After honoured, in seconds or as an HTTP date),
5xx retries, a 4xx with the server's message, malformed bodies becoming clear errors, timeouts retried
then reported, a keyless server, bounded concurrency, and a generate job through it."""

from __future__ import annotations

import email.utils
import json
import time

import numpy as np
import openai
import pytest

from offline_jobs.llm.base import ChatRequest
from offline_jobs.llm.openai_compat import (
    LLMHTTPError,
    LLMResponseError,
    LLMUnavailableError,
    OpenAIChatBackend,
    OpenAIEmbedder,
)
from offline_jobs.llm.registry import create_backend
from offline_jobs.settings import JobSettings
from tests.integration.fake_openai import DIM, FakeOpenAIServer

pytestmark = pytest.mark.integration

CHAT = "/v1/chat/completions"
EMB = "/v1/embeddings"


@pytest.fixture
def server():
    with FakeOpenAIServer(api_key="test-key") as srv:
        yield srv


def backend(server, **kw):
    opts = {"concurrency": 4, "timeout_s": 5.0, "max_retries": 3, "backoff_s": 0.01, "backoff_max_s": 0.5}
    opts.update(kw)
    return OpenAIChatBackend(server.base_url, "fake-model", api_key="test-key", **opts)


def req(i=0):
    return ChatRequest(
        messages=(("system", "You write profiles."), ("user", f"Describe user {i} who likes Fargo")), seed=i
    )


def test_chat_roundtrip_in_order_with_usage(server):
    results = backend(server).generate([req(i) for i in range(6)])
    assert [f"seed {i}." in r.text for i, r in enumerate(results)] == [True] * 6
    assert all(r.finish_reason == "stop" and r.completion_tokens > 0 for r in results)
    path, payload = server.requests[0]
    assert path == CHAT and payload["model"] == "fake-model" and payload["messages"][0]["role"] == "system"
    assert {"max_tokens", "temperature", "top_p", "seed"} <= set(payload)


def test_429_then_success_honours_retry_after(server):
    server.script(CHAT, 429, {"error": {"message": "Rate limit reached"}}, {"Retry-After": "0.3"})
    b = backend(server)
    started = time.perf_counter()
    (result,) = b.generate([req()])
    assert time.perf_counter() - started >= 0.3
    assert "seed 0." in result.text
    assert server.count(CHAT) == 2 and b.stats["retries"] == 1


def test_retry_after_as_an_http_date_is_honoured(server):
    when = email.utils.formatdate(time.time() + 1.5, usegmt=True)  # whole seconds: waits 0.5-1.5 s
    server.script(CHAT, 429, {"error": {"message": "Rate limit reached"}}, {"Retry-After": when})
    b = backend(server, backoff_max_s=5.0)
    started = time.perf_counter()
    (result,) = b.generate([req()])
    assert time.perf_counter() - started >= 0.4
    assert result.text and server.count(CHAT) == 2 and b.stats["retries"] == 1


def test_timeouts_are_retried_then_reported(server):
    server.delay_s = 0.6
    with pytest.raises(LLMUnavailableError, match=r"after 2 attempts; last error: timed out after 0.2s"):
        backend(server, timeout_s=0.2, max_retries=1).generate([req()])
    assert server.count(CHAT) == 2
    # a slow answer inside the timeout is fine
    server.delay_s = 0.1
    assert backend(server, timeout_s=3.0).generate([req()])[0].text


def test_unreachable_server_is_reported_after_retries():
    with FakeOpenAIServer() as srv:
        url = srv.base_url  # the port is closed once the server has stopped
    dead = OpenAIChatBackend(url, "m", max_retries=1, backoff_s=0.01, timeout_s=2.0)
    with pytest.raises(LLMUnavailableError, match=r"/v1/chat/completions failed after 2 attempts"):
        dead.generate([req()])


def test_keyless_server_works_without_a_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-must-not-leak")
    with FakeOpenAIServer(api_key=None) as srv:
        (result,) = OpenAIChatBackend(srv.base_url, "m").generate([req()])
        assert result.text
    assert srv.auth_headers == ["Bearer EMPTY"]


def test_the_sdk_still_has_the_retry_hook_we_override():
    """The project's backoff settings go through the SDK's retry-delay hook: fail loudly if it moves."""
    assert callable(getattr(openai.AsyncOpenAI, "_calculate_retry_timeout", None))
    assert callable(getattr(openai.AsyncOpenAI, "_parse_retry_after_header", None))
    assert callable(getattr(openai.AsyncOpenAI, "_should_retry", None))


def test_5xx_retried_then_gives_up_clearly(server):
    server.script(CHAT, 500, {"error": {"message": "boom"}})
    server.script(CHAT, 503, b"upstream down")
    (result,) = backend(server).generate([req()])
    assert result.text and server.count(CHAT) == 3
    for _ in range(3):
        server.script(CHAT, 502, {"error": {"message": "bad gateway"}})
    with pytest.raises(LLMUnavailableError, match=r"after 3 attempts.*bad gateway"):
        backend(server, max_retries=2).generate([req()])
    server.script(CHAT, 503, b"upstream down")  # a plain-text error body is quoted as is
    with pytest.raises(LLMUnavailableError, match=r"after 1 attempts; last error: HTTP 503: upstream down"):
        backend(server, max_retries=0).generate([req()])


def test_4xx_is_a_clear_error_without_retry(server):
    server.script(
        CHAT, 400, {"error": {"message": "max_tokens is too large: 99999", "type": "invalid_request_error"}}
    )
    with pytest.raises(LLMHTTPError) as info:
        backend(server).generate([req()])
    assert info.value.status == 400 and "max_tokens is too large" in str(info.value)
    assert server.count(CHAT) == 1
    # wrong key: the server's 401 message comes through
    with pytest.raises(LLMHTTPError, match=r"401.*Incorrect API key"):
        OpenAIChatBackend(server.base_url, "m", api_key="wrong", max_retries=0).generate([req()])


def test_malformed_responses_become_clear_errors(server):
    server.script(CHAT, 200, b"{not json")
    with pytest.raises(LLMResponseError, match="not JSON"):
        backend(server).generate([req()])
    server.script(CHAT, 200, {"id": "x", "choices": []})
    with pytest.raises(LLMResponseError, match="malformed chat completion"):
        backend(server).generate([req()])
    server.script(CHAT, 200, b"plain text", {"Content-Type": "text/plain"})
    with pytest.raises(LLMResponseError, match=r"malformed chat completion.*body is str"):
        backend(server).generate([req()])
    server.script(CHAT, 200, {"choices": [{"message": {"content": 42}}]})
    with pytest.raises(LLMResponseError, match=r"message\.content is not a string"):
        backend(server).generate([req()])
    server.script(EMB, 200, {"data": [{"index": 0}]})
    with pytest.raises(LLMResponseError, match="malformed embeddings"):
        OpenAIEmbedder(server.base_url, "e", api_key="test-key", max_retries=0).embed(["a"])
    server.script(EMB, 200, {"data": [{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": [1.0]}]})
    with pytest.raises(LLMResponseError, match="expected 1 embeddings, got 2"):
        OpenAIEmbedder(server.base_url, "e", api_key="test-key", max_retries=0).embed(["a"])


def test_bounded_concurrency(server):
    server.delay_s = 0.05
    backend(server, concurrency=3).generate([req(i) for i in range(12)])
    assert server.max_in_flight <= 3 and server.max_in_flight >= 2


def test_embeddings_batched_normalised_with_retry(server):
    server.script(EMB, 429, {"error": {"message": "slow down"}}, {"Retry-After": "0"})
    emb = OpenAIEmbedder(server.base_url, "fake-embed", api_key="test-key", batch_size=4, backoff_s=0.01)
    texts = [f"profile text {i}" for i in range(10)]
    vecs = emb.embed(texts)
    assert vecs.shape == (10, DIM) and emb.dim == DIM
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    expected = np.asarray(server.vector(texts[5]), dtype=np.float32)
    assert float(vecs[5] @ (expected / np.linalg.norm(expected))) > 0.9999
    assert server.count(EMB) == 4  # 3 batches + the 429
    assert {p["encoding_format"] for path, p in server.requests if path == EMB} == {"float"}


def test_settings_select_the_backend(server, monkeypatch):
    monkeypatch.setenv("PROFILEREC_LLM_BACKEND", "openai")
    monkeypatch.setenv("PROFILEREC_LLM_BASE_URL", server.base_url)
    monkeypatch.setenv("PROFILEREC_LLM_MODEL", "served-model")
    monkeypatch.setenv("PROFILEREC_LLM_API_KEY", "test-key")
    b = create_backend(JobSettings())
    assert isinstance(b, OpenAIChatBackend) and b.model_id == "openai:served-model"
    assert b.generate([req()])[0].text


def test_generate_job_through_the_fake_server(server, tmp_path, monkeypatch):
    """The CLI generate + embed path with chat and embeddings both on the OpenAI-compatible server."""
    from offline_jobs.cli.jobs import main

    monkeypatch.setenv("PROFILEREC_LLM_API_KEY", "test-key")
    server.script(CHAT, 429, {"error": {"message": "Rate limit"}}, {"Retry-After": "0"})
    out = tmp_path / "store"
    code = main(
        [
            "generate", "--strategy", "reclm", "--k", "2", "--users", "1,2", "--items", "1",
            "--out", str(out), "--llm-backend", "openai", "--llm-base-url", server.base_url,
            "--llm-model", "served-model", "--embed-backend", "openai", "--embed-base-url", server.base_url,
            "--embed-model", "fake-embed",
        ]
    )  # fmt: skip
    assert code == 0
    report = json.loads((out / "run_report.json").read_text())
    assert report["profiles_written"] == 6 and report["embedding_model"] == "openai:fake-embed"
    from rec_contract.profile_store import read_profile_vectors, read_profiles

    rows = read_profiles(out)
    assert {r["model"] for r in rows if not r["is_fallback"]} == {"openai:served-model"}
    vecs = read_profile_vectors(out, "user", ["1", "2"])
    assert vecs.vectors.shape == (2, 2, DIM) and vecs.mask.all()
