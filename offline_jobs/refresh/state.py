"""The refresh's settings, its persistent state (watermarks, totals) and the report of one run."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rec_contract.atomic import atomic_write_text
from rec_contract.paths import DEFAULT_WORK_DIR, fill_default_paths

EXIT_LOCKED = 75  # EX_TEMPFAIL: another run holds the lock; try again later
CRASH_ENV = "PROFILEREC_REFRESH_CRASH_AFTER"  # fault injection for the crash-recovery tests
DEAD_LETTER_FILE = "dead_letter.jsonl"
RUNS_KEPT = 3  # run folders kept under <state dir>/runs (the newest)
CACHE_MAX_AGE_S = 30 * 86400  # generations older than this are dropped from the shared cache


class RefreshSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PROFILEREC_", env_file=".env", extra="ignore")

    work_dir: Path = DEFAULT_WORK_DIR
    data_dir: Path | None = None
    bundles_root: Path = Field(None)  # type: ignore[assignment]  # default <work_dir>/bundles
    feedback_log: Path = Field(None)  # type: ignore[assignment]  # default <work_dir>/feedback/feedback.jsonl
    catalog_log: Path = Field(None)  # type: ignore[assignment]  # default <work_dir>/feedback/catalog.jsonl
    profile_store: Path | None = Field(None, description="default: the live bundle's profile store")
    qdrant_url: str | None = None
    qdrant_path: Path = Field(None)  # type: ignore[assignment]  # default <work_dir>/qdrant
    qdrant_api_key: str | None = None
    redis_url: str | None = "redis://127.0.0.1:6379/0"
    service_url: str = Field(
        "http://127.0.0.1:8000", description="the service, when it owns the embedded Qdrant"
    )
    admin_api_key: SecretStr | None = Field(None, description="the service's PROFILEREC_ADMIN_API_KEY")
    refresh_strategy: str = Field("proex", description="proex | reclm | duet | extractive")
    refresh_min_rating: float = 3.5
    refresh_batch: int = Field(200, gt=0, description="profiles per write request")

    @model_validator(mode="before")
    @classmethod
    def _paths(cls, data: Any) -> Any:
        return fill_default_paths(data, cls.model_fields)

    @property
    def state_dir(self) -> Path:
        return self.work_dir / "refresh"


class RefreshLockedError(RuntimeError):
    """Another refresh run holds the lock."""


class RefreshFailedError(RuntimeError):
    """A run failed as a whole (the watermarks did not move); the message names the stage and where."""


@dataclass
class RefreshState:
    feedback_offset: int = 0
    catalog_offset: int = 0
    last_success_at: str | None = None
    last_run_at: str | None = None
    runs: int = 0
    entities_total: int = 0
    failures_total: int = 0
    quarantined_total: int = 0

    @classmethod
    def load(cls, path: Path) -> RefreshState:
        if not path.exists():
            return cls()
        return cls(**json.loads(path.read_text()))

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(asdict(self), indent=2))


@dataclass
class RefreshReport:
    """What one run did (not what it planned): ``users``/``items`` were refreshed in the store and the
    online stores; ``quarantined`` were set aside (also in the dead-letter file)."""

    status: str = "running"  # noop | refreshed | partial (something quarantined) | failed
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    seconds: float = 0.0
    feedback_events: int = 0
    catalog_events: int = 0
    malformed_lines: int = 0
    changed: dict[str, int] = field(default_factory=dict)  # users and items the new events concern
    users: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    run_folder: str = ""
    generation: dict[str, Any] = field(default_factory=dict)
    store: dict[str, int] = field(default_factory=dict)
    kept_good: int = 0  # live profiles that passed the grounding check kept over failed refreshed ones
    writes: dict[str, Any] = field(default_factory=dict)
    live_data: dict[str, int] = field(default_factory=dict)
    watermarks: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    failed_stage: str | None = None
    traceback: str | None = None
    durations: dict[str, float] = field(default_factory=dict)
