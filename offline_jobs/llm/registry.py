"""The backend registry: ``create_backend(settings)`` picks the engine named by ``settings.llm_backend``
(``torch``, ``llama_cpp``, ``openai``, ``fake``; :mod:`offline_jobs.llm.base` has the types). Engines are
imported when first created, so a light process never loads torch or llama.cpp."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from offline_jobs.llm.base import LLMBackend
from offline_jobs.llm.fake import FakeBackend

if TYPE_CHECKING:
    from offline_jobs.settings import JobSettings


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
    from offline_jobs.llm.gguf_chat import SMOLLM2_FILE, SMOLLM2_MODEL_ID

    if not settings.llm_model or Path(settings.llm_model).name == SMOLLM2_FILE:
        return SMOLLM2_MODEL_ID
    return Path(settings.llm_model).stem


def _load_builtin() -> None:
    if "llama_cpp" in _REGISTRY:
        return

    @register_backend("llama_cpp")
    def _llama(settings: JobSettings) -> LLMBackend:
        if importlib.util.find_spec("llama_cpp") is None:
            raise ValueError(
                "LLM backend 'llama_cpp' needs llama-cpp-python, the optional `llama` extra: "
                "make install-llama (or pip install -e '.[llama]'); "
                "the default 'torch' backend runs the same model"
            )
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
