"""Typed service settings, read from the environment (prefix ``PROFILEREC_``) or a ``.env`` file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from rec_contract.paths import DEFAULT_WORK_DIR, fill_default_paths
from service.content import ContentSettings
from service.limits import DEFAULT_FEEDBACK_TYPES, FEEDBACK_TYPE_RE, MAX_FEEDBACK_BATCH, MAX_N


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PROFILEREC_", env_file=".env", extra="ignore")

    # Artefacts (paths default to folders under work_dir: see rec_contract.paths)
    work_dir: Path = Field(DEFAULT_WORK_DIR, description="root of the default paths below")
    bundles_root: Path = Field(
        None, description="versioned bundles and `current` (default <work_dir>/bundles)"
    )  # type: ignore[assignment]
    verify_checksums: bool = Field(True, description="verify every bundle file's sha256 on load")
    reload_interval_s: float = Field(
        2.0, ge=0, description="how often to look for a new `current` (0: never)"
    )

    # Retrieval store and profile source
    engine: Literal["auto", "exact", "edge", "qdrant"] = Field(
        "auto",
        description="auto: a Qdrant server when qdrant_url is set, else in-process (exact up to "
        "edge_above_items catalogue items, qdrant-edge HNSW above); exact / edge: in-process; qdrant: "
        "qdrant_url, or qdrant-client's local mode on qdrant_path (one process only)",
    )
    edge_above_items: int = Field(200_000, gt=0, description="auto: qdrant-edge above this many items")
    edge_ef: int = Field(
        128, gt=0, description="qdrant-edge search ef: recall against latency (benchmarks/retrieval_scale)"
    )
    online_dir: Path = Field(
        None, description="logs of what the API changed since the bundle (default <work_dir>/online)"
    )  # type: ignore[assignment]
    qdrant_url: str | None = Field(None, description="e.g. http://qdrant:6333; unset: in-process stores")
    qdrant_path: Path = Field(
        None, description="qdrant-client local mode storage (default <work_dir>/qdrant)"
    )  # type: ignore[assignment]
    qdrant_api_key: str | None = None
    qdrant_timeout_s: float = Field(
        5.0,
        gt=0,
        description="the longest Qdrant may keep a request waiting, over all the request's Qdrant calls "
        "and answer included: counted from its first call, they give up a tenth (at most 0.1 s) earlier, "
        "then the request answers 503 with Retry-After; each call of background work gets it whole",
    )
    qdrant_exact_search: bool = Field(
        True, description="brute-force search (exact top-N); off: HNSW on a server"
    )

    # Redis cache of fused user vectors
    redis_url: str | None = Field("redis://127.0.0.1:6379/0", description="unset: no cache")
    redis_timeout_s: float = Field(0.05, gt=0, description="socket timeout; a slow cache is skipped")
    redis_retry_after_s: float = Field(5.0, ge=0, description="after a Redis error, skip it this long")
    cache_ttl_s: int = Field(6 * 3600, gt=0)
    local_cache_entries: int = Field(
        10_000, ge=0, description="user vectors kept in each worker's memory (in-process profiles only)"
    )
    ready_requires_redis: bool = Field(False, description="if true, /readyz is 503 while Redis is down")

    # Feedback log the refresh job reads
    feedback_log: Path = Field(None, description="default <work_dir>/feedback/feedback.jsonl")  # type: ignore[assignment]
    catalog_log: Path = Field(
        None, description="items added/edited through the API (default <work_dir>/feedback/)"
    )  # type: ignore[assignment]
    max_feedback_batch: int = Field(MAX_FEEDBACK_BATCH, gt=0, le=MAX_FEEDBACK_BATCH)
    feedback_types: Annotated[frozenset[str], NoDecode] = Field(
        DEFAULT_FEEDBACK_TYPES,
        description="the feedback `type` values accepted (a Prometheus label: keep the set small); "
        "JSON list or comma-separated",
    )
    max_feedback_items_per_user: int = Field(
        10_000,
        gt=0,
        description="distinct items one user may give feedback on since the bundle was built; beyond it "
        "feedback is refused (422), so every acknowledged item stays excluded from the user's answers",
    )

    # Requests
    default_n: int = Field(20, gt=0)
    max_n: int = Field(MAX_N, gt=0, le=MAX_N, description="largest n; at most the API's documented limit")
    max_liked_items: int = Field(200, gt=0)
    max_text_chars: int = Field(4000, gt=0)
    snippet_chars: int = Field(200, gt=0)
    max_body_bytes: int = Field(
        2 * 1024 * 1024, gt=0, description="request bodies above this are refused (413) while being read"
    )
    max_url_chars: int = Field(8192, gt=0, description="longer paths + query strings are refused (414)")

    # Cold start: text requests and items known only by text (service.content; figures in
    # benchmarks/cold_start, defaults chosen on the MovieLens-100k demo bundle)
    text_weight: float = Field(
        0.7,
        ge=0,
        le=1,
        description="text requests: weight of the text's match with the items' own text against the "
        "user tower's score (0: the user tower alone)",
    )
    text_popularity_weight: float = Field(
        0.5, ge=0, description="text requests: weight of the items' standardised log-popularity"
    )
    text_match_low: float = Field(
        0.2,
        ge=-1,
        le=1,
        description="text requests: below this mean cosine of the text's 10 best item matches, the "
        "text's weight is 0 (a sentence that matches no item's text is left to the user tower)",
    )
    text_match_high: float = Field(
        0.35, ge=-1, le=1, description="text requests: from this mean best cosine, the full text_weight"
    )
    text_candidates: int = Field(
        50,
        gt=0,
        le=10_000,
        description="text requests: candidates from each of the two searches (at least n); 50 gave "
        "the same cold_start figures as 200 on the demo bundle, at a quarter of the per-candidate work",
    )
    new_item_vectors: Literal["neighbours", "tower"] = Field(
        "neighbours",
        description="vector of an item known only by text: the weighted mean of its nearest catalogue "
        "items' vectors by content (neighbours), or the bundle's item tower (tower)",
    )
    new_item_neighbours: int = Field(10, gt=0, le=1000, description="neighbours: how many")
    new_item_temperature: float = Field(
        0.1, gt=0, description="neighbours: softmax temperature over their cosine similarities"
    )

    # Auth: secure by default. Writes (PUT/DELETE /v1/items, POST /v1/feedback) and profile texts
    # (explain=true) need `api_key` unless auth is "off"; admin routes always need `admin_api_key`.
    auth: Literal["required", "off"] = Field(
        "required",
        description="required: writes and explain=true need the API key (refused with 401 while none "
        "is configured); off: anyone reaching the port may write (explicit opt-out, loopback demos)",
    )
    auth_reads: bool = Field(False, description="if true, recommendation reads need the API key too")
    api_key: SecretStr | None = Field(None, description="the key clients send in `api_key_header`")
    api_key_header: str = "X-API-Key"
    admin_api_key: SecretStr | None = Field(
        None, description="key of /v1/admin/* (header X-Admin-Key); unset: the admin routes answer 401"
    )

    # Server
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = Field(1, ge=1)

    def content_settings(self) -> ContentSettings:
        return ContentSettings(
            text_weight=self.text_weight,
            text_popularity_weight=self.text_popularity_weight,
            text_match_low=self.text_match_low,
            text_match_high=self.text_match_high,
            candidates=self.text_candidates,
            new_item_vectors=self.new_item_vectors,
            new_item_neighbours=self.new_item_neighbours,
            new_item_temperature=self.new_item_temperature,
        )

    @field_validator("qdrant_url", "redis_url", "api_key", "admin_api_key", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("feedback_types", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str) and not value.lstrip().startswith("["):
            return frozenset(v.strip() for v in value.split(",") if v.strip())
        return value

    @field_validator("feedback_types")
    @classmethod
    def _label_safe(cls, value: frozenset[str]) -> frozenset[str]:
        bad = sorted(v for v in value if not FEEDBACK_TYPE_RE.fullmatch(v))
        if bad or not value:
            raise ValueError(f"feedback types must match {FEEDBACK_TYPE_RE.pattern} (got {bad or 'none'})")
        return value

    @model_validator(mode="before")
    @classmethod
    def _paths(cls, data: Any) -> Any:
        return fill_default_paths(data, cls.model_fields)
