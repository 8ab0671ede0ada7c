"""OpenAI-compatible chat-completions and embeddings backends (vLLM, Ollama, OpenAI, ...) on the
official ``openai`` SDK (:class:`openai.AsyncOpenAI`).

The SDK does the HTTP: per-request timeouts, retries on 408/409/429/5xx and connection/timeout errors
honouring ``Retry-After``, typed responses. This module adds what the jobs rely on:

* bounded concurrency: at most ``concurrency`` requests in flight (an asyncio semaphore over one
  client per call);
* the project's backoff settings (``PROFILEREC_LLM_BACKOFF_S`` / ``_BACKOFF_MAX_S``): exponential
  backoff with full jitter, a ``Retry-After`` hint capped at the maximum;
* the project's errors: :class:`LLMHTTPError` on a 4xx that is not retried (status, URL and the
  server's error message), :class:`LLMUnavailableError` once retries are exhausted, and
  :class:`LLMResponseError` when a 2xx body is not the OpenAI JSON shape.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import openai
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion

from offline_jobs.llm.base import ChatRequest, GenerationResult, LLMError

if TYPE_CHECKING:
    from offline_jobs.settings import JobSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

# Sent when no key is configured: keyless servers (vLLM, Ollama) ignore it, and the SDK never falls
# back to the OPENAI_API_KEY of the environment (which must not leak to a self-hosted endpoint).
NO_KEY = "EMPTY"


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


def _server_message(exc: openai.APIStatusError) -> str:
    response = exc.response
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


def _dump(obj: object) -> str:
    if isinstance(obj, openai.BaseModel):
        return obj.model_dump_json(warnings=False)[:300]
    return repr(obj)[:300]


class _Client(openai.AsyncOpenAI):
    """The SDK client with the project's backoff (the SDK's own is fixed at 0.5 s doubling to 8 s)
    and a retry counter."""

    def __init__(self, *, backoff_s: float, backoff_max_s: float, stats: dict[str, int], **kw: Any) -> None:
        super().__init__(**kw)
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.stats = stats

    def _calculate_retry_timeout(
        self, remaining_retries: int, options: Any, response_headers: Any = None
    ) -> float:
        self.stats["retries"] += 1
        hinted = self._parse_retry_after_header(response_headers)
        if hinted is not None and math.isfinite(hinted):
            delay = min(max(0.0, hinted), self.backoff_max_s)
        else:
            attempt = max(0, options.get_max_retries(self.max_retries) - remaining_retries)
            delay = random.uniform(0, min(self.backoff_max_s, self.backoff_s * 2**attempt))
        log.warning("retrying %s in %.2fs", options.url, delay)
        return delay


class _OpenAIHTTP:
    """Client settings shared by chat and embeddings; :meth:`call` maps SDK errors to the project's."""

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
        self.stats = {"calls": 0, "retries": 0}

    def client(self) -> _Client:
        return _Client(
            base_url=self.base_url,
            api_key=self.api_key or NO_KEY,
            timeout=self.timeout_s,
            max_retries=self.max_retries,
            backoff_s=self.backoff_s,
            backoff_max_s=self.backoff_max_s,
            stats=self.stats,
        )

    async def call(
        self, client: _Client, sem: asyncio.Semaphore, path: str, send: Callable[[], Awaitable[T]]
    ) -> T:
        url = f"{self.base_url}/{path}"
        async with sem:
            self.stats["calls"] += 1
            try:
                return await send()
            except json.JSONDecodeError as exc:
                raise LLMResponseError(f"malformed response from {url}: body is not JSON ({exc})") from None
            except openai.APIStatusError as exc:
                message = _server_message(exc)
                if not client._should_retry(exc.response):
                    raise LLMHTTPError(exc.status_code, url, message) from None
                problem = f"HTTP {exc.status_code}: {message}"
            except openai.APITimeoutError:
                problem = f"timed out after {self.timeout_s}s"
            except openai.APIConnectionError as exc:
                cause = exc.__cause__
                problem = f"{type(cause).__name__}: {cause}" if cause else str(exc)
        attempts = self.max_retries + 1
        raise LLMUnavailableError(f"{url} failed after {attempts} attempts; last error: {problem}")


def _run(coro: Any) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    raise RuntimeError("call the OpenAI backends from synchronous code (no running event loop)")


def _parse_chat(completion: object, url: str, model: str) -> GenerationResult:
    try:
        if not isinstance(completion, ChatCompletion):
            raise TypeError(f"body is {type(completion).__name__}, not a chat completion")
        if not completion.choices:
            raise IndexError("no choices")
        choice = completion.choices[0]
        if choice.message is None:
            raise KeyError("message")
        content = choice.message.content
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise TypeError("message.content is not a string")
        usage = completion.usage
        return GenerationResult(
            text=content.strip(),
            prompt_tokens=int((usage.prompt_tokens if usage else 0) or 0),
            completion_tokens=int((usage.completion_tokens if usage else 0) or 0),
            finish_reason=str(choice.finish_reason or "stop"),
            model=model,
        )
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise LLMResponseError(
            f"malformed chat completion from {url}: {type(exc).__name__}: {exc}; body: {_dump(completion)}"
        ) from None


def _http_settings(settings: JobSettings) -> dict[str, Any]:
    """The client options chat and embeddings share (bounded concurrency, timeout, retries)."""
    return {
        "concurrency": settings.llm_concurrency,
        "timeout_s": settings.llm_timeout_s,
        "max_retries": settings.llm_max_retries,
        "backoff_s": settings.llm_backoff_s,
        "backoff_max_s": settings.llm_backoff_max_s,
    }


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
            **_http_settings(settings),
        )

    @property
    def stats(self) -> dict[str, int]:
        return self.http.stats

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
                payload = self.payload(req)
                completion = await self.http.call(
                    client, sem, "chat/completions", lambda: client.chat.completions.create(**payload)
                )
                result = _parse_chat(completion, url, self.model_id)
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
            **_http_settings(settings),
        )

    @property
    def stats(self) -> dict[str, int]:
        return self.http.stats

    def _parse(self, response: object, n: int, url: str) -> np.ndarray:
        try:
            if not isinstance(response, CreateEmbeddingResponse):
                raise TypeError(f"body is {type(response).__name__}, not an embeddings response")
            data = sorted(response.data or [], key=lambda d: int(d.index or 0))
            if len(data) != n:
                raise ValueError(f"expected {n} embeddings, got {len(data)}")
            if any(not isinstance(d.embedding, list) for d in data):
                raise TypeError("an embedding is not a list of floats")
            arr = np.asarray([d.embedding for d in data], dtype=np.float32)
            if arr.ndim != 2 or arr.shape[1] == 0 or not np.isfinite(arr).all():
                raise ValueError(f"embeddings have shape {arr.shape} or non-finite values")
        except (KeyError, TypeError, ValueError) as exc:
            raise LLMResponseError(
                f"malformed embeddings response from {url}: {type(exc).__name__}: {exc}; "
                f"body: {_dump(response)}"
            ) from None
        return arr

    async def _aembed(self, texts: Sequence[str]) -> np.ndarray:
        sem = asyncio.Semaphore(self.http.concurrency)
        url = f"{self.http.base_url}/embeddings"
        chunks = [list(texts[i : i + self.batch_size]) for i in range(0, len(texts), self.batch_size)]
        extra: dict[str, Any] = {"dimensions": self.dimensions} if self.dimensions else {}
        async with self.http.client() as client:

            async def one(chunk: list[str]) -> np.ndarray:
                # "float": OpenAI-compatible servers do not all speak the SDK's default base64 encoding
                response = await self.http.call(
                    client,
                    sem,
                    "embeddings",
                    lambda: client.embeddings.create(
                        model=self.model, input=chunk, encoding_format="float", **extra
                    ),
                )
                return self._parse(response, len(chunk), url)

            parts = await asyncio.gather(*(one(c) for c in chunks))
        return np.concatenate(parts)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        arr: np.ndarray = _run(self._aembed(texts))
        self.dim = int(arr.shape[1])
        norms = np.linalg.norm(arr, axis=1, keepdims=True)
        return (arr / np.maximum(norms, 1e-12)).astype(np.float32)
