"""Typed settings of the offline jobs, from the environment (prefix ``PROFILEREC_``) or a ``.env`` file.

Examples::

    PROFILEREC_LLM_BACKEND=openai
    PROFILEREC_LLM_BASE_URL=http://localhost:8000/v1      # vLLM; Ollama: http://localhost:11434/v1
    PROFILEREC_LLM_MODEL=Qwen/Qwen2.5-7B-Instruct
    PROFILEREC_LLM_API_KEY=sk-...                         # OpenAI; any string for vLLM/Ollama
    PROFILEREC_EMBED_BACKEND=openai
    PROFILEREC_EMBED_MODEL=text-embedding-3-small

CLI flags override these per run.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# Best of N, measured (``python -m benchmarks profile_quality --configs off,on,n2,n3``, a seeded sample
# of 8 users + 8 items, ProEx K=4, SmolLM2-135M, benchmarks/results.jsonl 2026-12-03): N=1 kept 89% of
# the slots as LLM profiles (10.9% fallbacks) at 1.32x the generations of the check-off job; N=2 4.7%
# fallbacks at 1.76x; N=3 3.1% at 2.34x. N=1 is the default: it keeps the job above half the check-off
# throughput (0.77x measured); N=2 roughly halves the fallbacks for a third more generations. On the
# seeded 150+150 sample (ProEx K=2) N=1 fell back on 15.7% of the slots.
CANDIDATES_HELP = (
    "best of N: profile candidates generated per slot and attempt, the most faithful one that passes the "
    "grounding check kept (default 1, chosen by measurement: on a seeded 8+8 ProEx K=4 SmolLM2 sample "
    "N=1/2/3 gave fallback rates 0.109/0.047/0.031 at 1.32x/1.76x/2.34x the generations of the "
    "check-off job, and N=1 0.157 on a seeded 150+150 K=2 sample; N=2 when fewer extractive fallbacks "
    "are worth a third more generation time)"
)

REPAIR_HELP = (
    "cut a generated profile whose only faults are grounding faults to its sentences that pass the "
    "check on their own, kept when the rest passes every check and still names a title of the data or "
    "two supported genres (offline_jobs.profiles.validation); off: such a profile is regenerated or "
    "replaced by the extractive one"
)


class JobSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PROFILEREC_", env_file=".env", extra="ignore")

    # generation
    llm_backend: Literal["torch", "llama_cpp", "openai", "fake"] = "torch"  # docs/llm-backends.md
    llm_model: str | None = (
        None  # openai: the served model name; torch/llama_cpp: a GGUF path (default SmolLM2)
    )
    llm_base_url: str = "http://localhost:8000/v1"  # openai: the server (vLLM, Ollama, OpenAI)
    llm_api_key: SecretStr | None = None  # openai: any string for vLLM/Ollama
    temperature: float = 0.7  # sampling
    top_p: float = 0.9  # nucleus sampling
    max_tokens: int = 96  # token limit of one profile
    seed: int = 2024  # sampling seed (part of every generation's cache key)
    llm_concurrency: int = Field(default=8, ge=1)  # openai: requests in flight
    llm_timeout_s: float = 120.0  # openai: one request
    llm_max_retries: int = Field(default=5, ge=0)  # openai: retries of 429, 5xx, timeouts
    llm_backoff_s: float = 1.0  # openai: first backoff (exponential, jittered, Retry-After wins)
    llm_backoff_max_s: float = 30.0  # openai: longest backoff
    # embedded model (torch and llama_cpp backends)
    llama_threads: int = Field(default=1, ge=1)  # 1 is faster than 2 when the other core is busy
    llama_n_ctx: int = 1024  # per sequence
    llama_batch_seqs: int = Field(default=64, ge=1)  # sequences decoded together
    job_workers: int = Field(default=1, ge=1)  # processes sharing a generation job (embedded backends)
    # faithfulness: reject profiles that name titles outside the data, contradict the item table or
    # claim genres the history does not support (offline_jobs.profiles.grounding); best of N candidates each
    grounding: bool = True  # check profiles against their data (offline_jobs.profiles.grounding)
    profile_candidates: int = Field(
        default=1, ge=1, le=8, description=CANDIDATES_HELP
    )  # best of N per profile
    grounding_repair: bool = Field(default=True, description=REPAIR_HELP)

    def active_entities(self, override: int | None = None) -> int:
        """How many entities a generation job keeps in flight (``override`` wins when given).

        A served endpoint: enough to keep its concurrency busy. Embedded: enough entities to fill the
        decode batch, few enough that their conversations stay in the KV cache.
        """
        if override:
            return override
        if self.llm_backend == "openai":
            return max(8, self.llm_concurrency)
        return max(4, self.llama_batch_seqs * 3 // 2)

    # embedding
    embed_backend: Literal["minilm", "onnx", "openai"] = "minilm"  # docs/llm-backends.md
    text_encoder_dir: str | None = None  # onnx: the exported encoder (default <work dir>/text_encoder)
    embed_threads: int | None = Field(default=None, ge=1)  # onnx: threads (default: every core)
    embed_model: str = "text-embedding-3-small"  # openai embeddings model
    embed_base_url: str | None = None  # default: llm_base_url
    embed_api_key: SecretStr | None = None  # default: llm_api_key
    embed_dimensions: int | None = None  # openai: ask for vectors of this size

    # Publishing gate: refuse a model whose validation Recall@20 trails EASE's (fitted on the same split)
    # by more than this absolute amount (bootstrap and gated retrain); None: report the gap, never refuse.
    max_gap_to_ease: float | None = Field(
        default=None, ge=0.0
    )  # publishing gate: refuse a model trailing EASE by more

    # Qdrant
    qdrant_url: str | None = None  # a Qdrant server; unset: local mode
    qdrant_path: str | None = None  # local-mode folder (default <work dir>/qdrant)
    qdrant_api_key: SecretStr | None = None  # server mode
