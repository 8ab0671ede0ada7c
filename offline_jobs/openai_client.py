"""OpenAI-compatible chat-completions and embeddings backends (vLLM, Ollama, OpenAI, ...).

* bounded concurrency: at most ``concurrency`` requests in flight (an asyncio semaphore over one
  ``httpx.AsyncClient``);
* timeouts per request;
* retries with exponential backoff and full jitter on 429, 5xx and connection/timeout errors,
  honouring ``Retry-After`` (seconds or an HTTP date) when the server sends it;
* a clear :class:`LLMHTTPError` on other 4xx (status, URL and the server's error message) and a
  clear :class:`LLMResponseError` when a 2xx body is not the OpenAI JSON shape.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np

from offline_jobs.llm import ChatRequest, GenerationResult, LLMError

if TYPE_CHECKING:
    from offline_jobs.settings import JobSettings

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class LLMHTTPError(LLMError):
    def __init__(self, status: int, url: str, message: str) -> None:
        super().__init__(f"HTTP {status} from {url}: {message}")
        self.status = status
        self.url = url
        self.server_message = message


class LLMResponseError(LLMError):
    """The server answered 2xx but the body is not a valid OpenAI-shaped response."""


class LLMUnavailableError(LLMError):
    """Retries exhausted on 429/5xx/connection errors."""


def _server_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if body.get("message"):
            return str(body["message"])
        if body.get("detail"):
            return str(body["detail"])
    return json.dumps(body)[:500]


def _retry_after(response: httpx.Response | None) -> float | None:
    if response is None:
        return None
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class _OpenAIHTTP:
    """POST JSON with bounded concurrency, timeouts and retries."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        concurrency: int = 8,
        timeout_s: float = 120.0,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        backoff_max_s: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.concurrency = max(1, concurrency)
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.stats = {"http_requests": 0, "retries": 0}

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        hinted = _retry_after(response)
        if hinted is not None:
            return min(hinted, self.backoff_max_s)
        return random.uniform(0, min(self.backoff_max_s, self.backoff_s * 2**attempt))

    async def post(
        self, client: httpx.AsyncClient, sem: asyncio.Semaphore, path: str, payload: dict[str, Any]
    ) -> Any:
        url = f"{self.base_url}/{path.lstrip('/')}"
        attempt = 0
        while True:
            response: httpx.Response | None = None
            problem: str
            async with sem:
                self.stats["http_requests"] += 1
                try:
                    response = await client.post(url, json=payload, headers=self._headers())
                except (httpx.TimeoutException, httpx.TransportError) as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                else:
                    if response.status_code < 300:
                        try:
                            return response.json()
                        except ValueError as exc:
                            raise LLMResponseError(
                                f"malformed response from {url}: body is not JSON ({exc}): "
                                f"{response.text[:200]!r}"
                            ) from None
                    if response.status_code not in RETRY_STATUS:
                        raise LLMHTTPError(response.status_code, url, _server_message(response))
                    problem = f"HTTP {response.status_code}: {_server_message(response)}"
            if attempt >= self.max_retries:
                raise LLMUnavailableError(f"{url} failed after {attempt + 1} attempts; last error: {problem}")
            delay = self._delay(attempt, response)
            self.stats["retries"] += 1
            log.warning("retrying %s in %.2fs (%s)", url, delay, problem)
            await asyncio.sleep(delay)
            attempt += 1

    def client(self) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        return httpx.AsyncClient(timeout=httpx.Timeout(self.timeout_s), limits=limits)


def _run(coro: Any) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    raise RuntimeError("call the OpenAI backends from synchronous code (no running event loop)")


def _parse_chat(body: Any, url: str, model: str) -> GenerationResult:
    try:
        choice = body["choices"][0]
        content = choice["message"]["content"]
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise TypeError("message.content is not a string")
        finish = choice.get("finish_reason") or "stop"
        usage = body.get("usage") or {}
        return GenerationResult(
            text=content.strip(),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            finish_reason=str(finish),
            model=model,
        )
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise LLMResponseError(
            f"malformed chat completion from {url}: {type(exc).__name__}: {exc}; "
            f"body: {json.dumps(body)[:300]}"
        ) from None


class OpenAIChatBackend:
    """``generate`` sends every request concurrently (bounded) and returns them in order."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, **http: Any) -> None:
        if not model:
            raise ValueError("the openai backend needs a model name (PROFILEREC_LLM_MODEL or --llm-model)")
        self.model = model
        self.model_id = f"openai:{model}"
        self.http = _OpenAIHTTP(base_url, api_key, **http)

    @classmethod
    def from_settings(cls, settings: JobSettings) -> OpenAIChatBackend:
        return cls(
            base_url=settings.llm_base_url,
            model=settings.llm_model or "",
            api_key=settings.llm_api_key.get_secret_value() if settings.llm_api_key else None,
            concurrency=settings.llm_concurrency,
            timeout_s=settings.llm_timeout_s,
            max_retries=settings.llm_max_retries,
            backoff_s=settings.llm_backoff_s,
            backoff_max_s=settings.llm_backoff_max_s,
        )

    def payload(self, req: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": r, "content": c} for r, c in req.messages],
            "max_tokens": req.max_tokens,
            "temperature": req.temperature,
            "top_p": req.top_p,
            "seed": req.seed,
        }
        if req.stop:
            body["stop"] = list(req.stop)
        return body

    async def _agenerate(self, requests: Sequence[ChatRequest]) -> list[GenerationResult]:
        sem = asyncio.Semaphore(self.http.concurrency)
        url = f"{self.http.base_url}/chat/completions"
        async with self.http.client() as client:

            async def one(req: ChatRequest) -> GenerationResult:
                started = time.perf_counter()
                body = await self.http.post(client, sem, "chat/completions", self.payload(req))
                result = _parse_chat(body, url, self.model_id)
                result.seconds = time.perf_counter() - started
                return result

            return list(await asyncio.gather(*(one(r) for r in requests)))

    def generate(self, requests: Sequence[ChatRequest]) -> list[GenerationResult]:
        if not requests:
            return []
        results: list[GenerationResult] = _run(self._agenerate(requests))
        return results

    def close(self) -> None:
        return None


class OpenAIEmbedder:
    """OpenAI-compatible ``/embeddings``: batched inputs, concurrent batches, L2-normalised output."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        batch_size: int = 64,
        dimensions: int | None = None,
        **http: Any,
    ) -> None:
        self.model = model
        self.model_id = f"openai:{model}"
        self.batch_size = batch_size
        self.dimensions = dimensions
        self.dim = dimensions or 0  # known after the first call when not configured
        self.http = _OpenAIHTTP(base_url, api_key, **http)

    @classmethod
    def from_settings(cls, settings: JobSettings) -> OpenAIEmbedder:
        key = settings.embed_api_key or settings.llm_api_key
        return cls(
            base_url=settings.embed_base_url or settings.llm_base_url,
            model=settings.embed_model,
            api_key=key.get_secret_value() if key else None,
            dimensions=settings.embed_dimensions,
            concurrency=settings.llm_concurrency,
            timeout_s=settings.llm_timeout_s,
            max_retries=settings.llm_max_retries,
            backoff_s=settings.llm_backoff_s,
            backoff_max_s=settings.llm_backoff_max_s,
        )

    def _parse(self, body: Any, n: int, url: str) -> np.ndarray:
        try:
            data = sorted(body["data"], key=lambda d: int(d.get("index", 0)))
            if len(data) != n:
                raise ValueError(f"expected {n} embeddings, got {len(data)}")
            arr = np.asarray([d["embedding"] for d in data], dtype=np.float32)
            if arr.ndim != 2 or arr.shape[1] == 0 or not np.isfinite(arr).all():
                raise ValueError(f"embeddings have shape {arr.shape} or non-finite values")
        except (KeyError, TypeError, ValueError) as exc:
            raise LLMResponseError(
                f"malformed embeddings response from {url}: {type(exc).__name__}: {exc}; "
                f"body: {json.dumps(body)[:300]}"
            ) from None
        return arr

    async def _aembed(self, texts: Sequence[str]) -> np.ndarray:
        sem = asyncio.Semaphore(self.http.concurrency)
        url = f"{self.http.base_url}/embeddings"
        chunks = [list(texts[i : i + self.batch_size]) for i in range(0, len(texts), self.batch_size)]
        async with self.http.client() as client:

            async def one(chunk: list[str]) -> np.ndarray:
                payload: dict[str, Any] = {"model": self.model, "input": chunk}
                if self.dimensions:
                    payload["dimensions"] = self.dimensions
                body = await self.http.post(client, sem, "embeddings", payload)
                return self._parse(body, len(chunk), url)

            parts = await asyncio.gather(*(one(c) for c in chunks))
        return np.concatenate(parts)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        arr: np.ndarray = _run(self._aembed(texts))
        self.dim = int(arr.shape[1])
        norms = np.linalg.norm(arr, axis=1, keepdims=True)
        return (arr / np.maximum(norms, 1e-12)).astype(np.float32)
