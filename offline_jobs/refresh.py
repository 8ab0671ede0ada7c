"""The daily profile refresh: regenerate the profiles of whoever changed since the last run.

One run:

1. takes the refresh lock (``<work>/refresh/refresh.lock``; a second run exits at once);
2. reads the feedback and catalogue logs from its watermarks (byte offsets of complete lines);
3. finds the users with new positive feedback and the items with new feedback or added/edited
   through the API; nothing new means a no-op;
4. rebuilds their profiles with the same strategies and validation as the generation job, on the live
   data (the live bundle's dataset plus every logged event so far), re-embeds them and merges them into
   the live profile store;
5. writes them to the live Qdrant profiles collection, re-encodes changed catalogue items through the
   item tower, and deletes exactly their Redis cache keys (in-process with the service's own code when
   it can open Qdrant, else through the running service's admin API, which owns the embedded storage);
6. only then moves the watermarks, and writes a run report and a Prometheus textfile.

Its cost grows with the number of changed entities, not with the catalogue. It is idempotent (a
second run finds nothing new) and crash-safe: a run killed anywhere before step 6 leaves the
watermarks where they were, so the next run redoes the same entities, answering the LLM calls from
the generation cache, and every write is an upsert or a delete.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from offline_jobs.live_data import apply_logs, changes_of
from rec_contract.atomic import atomic_write_text
from rec_contract.bundle import BundleManifest, read_manifest, resolve_pointer
from rec_contract.event_log import LogChunk, read_events
from rec_contract.paths import DEFAULT_WORK_DIR, fill_default_paths
from rec_contract.profile_store import merge_into_store, read_profiles, read_store_vectors

log = logging.getLogger(__name__)

EXIT_LOCKED = 75  # EX_TEMPFAIL: another run holds the lock; try again later
CRASH_ENV = "PROFILEREC_REFRESH_CRASH_AFTER"  # fault injection for the crash-recovery tests


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
    admin_api_key: str | None = None
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


@dataclass
class RefreshState:
    feedback_offset: int = 0
    catalog_offset: int = 0
    last_success_at: str | None = None
    last_run_at: str | None = None
    runs: int = 0
    entities_total: int = 0
    failures_total: int = 0

    @classmethod
    def load(cls, path: Path) -> RefreshState:
        if not path.exists():
            return cls()
        return cls(**json.loads(path.read_text()))

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(asdict(self), indent=2))


@dataclass
class RefreshReport:
    status: str = "running"  # noop | refreshed | failed
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    seconds: float = 0.0
    feedback_events: int = 0
    catalog_events: int = 0
    malformed_lines: int = 0
    users: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    generation: dict[str, Any] = field(default_factory=dict)
    store: dict[str, int] = field(default_factory=dict)
    writes: dict[str, Any] = field(default_factory=dict)
    live_data: dict[str, int] = field(default_factory=dict)
    watermarks: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    durations: dict[str, float] = field(default_factory=dict)


@contextlib.contextmanager
def refresh_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise RefreshLockedError(f"another refresh holds {path}") from exc
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def _timed(durations: dict[str, float], name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        durations[name] = round(time.perf_counter() - started, 3)


def _read_all(path: Path, end: int) -> LogChunk:
    """Every complete event of a log up to byte ``end`` (the histories the profiles are built from)."""
    return read_events(path, 0, max_bytes=end) if end else LogChunk([], 0, 0, 0)


def _crash_point(name: str) -> None:
    if os.environ.get(CRASH_ENV) == name:
        log.error("fault injection: exiting at %s", name)
        os._exit(137)


# ---------------------------------------------------------------------- writing to the online stores
def _upsert_requests(
    store: Path, changed: dict[str, list[str]], version: str, batch: int
) -> list[dict[str, Any]]:
    """The admin API's ``ProfilesUpsertRequest`` bodies for the changed entities, from the store."""
    texts: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    wanted = {(t, i) for t, ids in changed.items() for i in ids}
    for row in read_profiles(store):
        key = (row["entity_type"], row["entity_id"])
        if key in wanted:
            texts.setdefault(key, {})[int(row["slot"])] = row
    entries, _, _ = read_store_vectors(store)
    bodies: list[dict[str, Any]] = []
    for entity_type in ("user", "item"):
        profiles = []
        for et, entity_id, vectors in entries:
            if et != entity_type or (et, entity_id) not in wanted:
                continue
            slots = texts.get((et, entity_id), {})
            ordered = [slots[s] for s in sorted(slots)][: len(vectors)]
            profiles.append(
                {
                    "entity_id": entity_id,
                    "vectors": vectors.tolist(),
                    "texts": [str(r["text"]) for r in ordered],
                    "strategy": str(ordered[0]["strategy"]) if ordered else "",
                    "is_fallback": [bool(r["is_fallback"]) for r in ordered],
                }
            )
        for start in range(0, len(profiles), batch):
            bodies.append(
                {
                    "entity_type": entity_type,
                    "store_version": version,
                    "profiles": profiles[start : start + batch],
                }
            )
    return bodies


def _embedded_storage_locked(path: Path) -> bool:
    lock = path / ".lock"
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


async def _write_in_process(settings: RefreshSettings, bodies: list[dict[str, Any]]) -> dict[str, Any]:
    """Use the service's own write path (towers, Qdrant, Redis) in this process."""
    from service.recommender import upsert_profiles
    from service.runtime import build_runtime
    from service.schemas import ProfilesUpsertRequest
    from service.settings import ServiceSettings

    rt = build_runtime(
        ServiceSettings(
            bundles_root=settings.bundles_root,
            qdrant_url=settings.qdrant_url,
            qdrant_path=settings.qdrant_path,
            qdrant_api_key=settings.qdrant_api_key,
            redis_url=settings.redis_url,
            reload_interval_s=0,
        )
    )
    try:
        await rt.refresh_bundle()
        upserted = invalidated = 0
        for body in bodies:
            result = await upsert_profiles(rt, ProfilesUpsertRequest.model_validate(body))
            upserted += result.upserted
            invalidated += result.invalidated
        if rt.cache.last_error:
            raise RuntimeError(f"redis: {rt.cache.last_error} (cache keys could not be invalidated)")
    finally:
        await rt.close()
    return {"path": "in-process", "upserted": upserted, "invalidated": invalidated}


def _write_through_service(settings: RefreshSettings, bodies: list[dict[str, Any]]) -> dict[str, Any]:
    headers = {"X-Admin-Key": settings.admin_api_key} if settings.admin_api_key else {}
    upserted = invalidated = 0
    with httpx.Client(base_url=settings.service_url, timeout=60, headers=headers) as client:
        for body in bodies:
            response = client.post("/v1/admin/profiles", json=body)
            if response.status_code != 200:
                raise RuntimeError(
                    f"service admin API answered {response.status_code}: {response.text[:300]}"
                )
            result = response.json()
            upserted += int(result["upserted"])
            invalidated += int(result["invalidated"])
    return {"path": f"service {settings.service_url}", "upserted": upserted, "invalidated": invalidated}


def write_online(settings: RefreshSettings, bodies: list[dict[str, Any]]) -> dict[str, Any]:
    if not bodies:
        return {"path": "none", "upserted": 0, "invalidated": 0}
    if settings.qdrant_url is None and _embedded_storage_locked(settings.qdrant_path):
        return _write_through_service(settings, bodies)
    return asyncio.run(_write_in_process(settings, bodies))


# ---------------------------------------------------------------------- the run
def _live_context(
    manifest: BundleManifest, settings: RefreshSettings, feedback: LogChunk, catalog: LogChunk
) -> Any:
    from offline_jobs.context import JobContext
    from training.data import Split, load_dataset, split_dataset

    source = manifest.dataset.source or manifest.dataset.name
    base = load_dataset(source, settings.data_dir)
    live, counts = apply_logs(base, feedback.events, catalog.events, settings.refresh_min_rating)
    base_split = split_dataset(base, manifest.dataset.split_method, seed=_split_seed(manifest))  # type: ignore[arg-type]
    if base_split.fingerprint() != manifest.dataset.split_fingerprint:
        raise RuntimeError(f"the split of {source} no longer matches the live bundle's (data changed?)")
    train_u, train_i = base_split.pairs("train")
    # Logged interactions the base data did not have become training data of the profile histories
    # (base indices are kept by apply_logs: new users and items are appended).
    logged = set(zip(live.user.tolist(), live.item.tolist(), strict=True)) - set(
        zip(base.user.tolist(), base.item.tolist(), strict=True)
    )
    extra = sorted(logged)
    users = list(train_u) + [u for u, _ in extra]
    items = list(train_i) + [i for _, i in extra]
    split = Split.from_pairs(
        live.n_users,
        live.n_items,
        {
            "train": (_arr(users), _arr(items)),
            "valid": base_split.pairs("valid"),
            "test": base_split.pairs("test"),
        },
        "live",
        {"base": base_split.fingerprint()},
    )
    return JobContext(
        dataset=live, split=split, split_method="live", split_seed=_split_seed(manifest)
    ), counts


def _arr(values: list[int]) -> Any:
    import numpy as np

    return np.asarray(values, dtype=np.int32)


def _split_seed(manifest: BundleManifest) -> int:
    return int(manifest.training.get("split_seed", 2024))


def write_metrics(path: Path, state: RefreshState, report: RefreshReport) -> None:
    """The textfile a Prometheus textfile collector scrapes (``profilerec_refresh_*``)."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, write_to_textfile

    registry = CollectorRegistry()
    last = Gauge(
        "profilerec_refresh_last_success_timestamp_seconds",
        "Unix time of the last successful refresh",
        registry=registry,
    )
    if state.last_success_at:
        last.set(datetime.fromisoformat(state.last_success_at).timestamp())
    Gauge("profilerec_refresh_duration_seconds", "Wall time of the last refresh run", registry=registry).set(
        report.seconds
    )
    entities = Counter(
        "profilerec_refresh_entities", "Users and items whose profiles were refreshed", registry=registry
    )
    entities.inc(state.entities_total)
    failures = Counter("profilerec_refresh_failures", "Refresh runs that failed", registry=registry)
    failures.inc(state.failures_total)
    Gauge(
        "profilerec_refresh_last_run_entities", "Entities refreshed by the last run", registry=registry
    ).set(len(report.users) + len(report.items))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)


def run_refresh(settings: RefreshSettings | None = None) -> RefreshReport:
    """One refresh run (see the module docstring). Raises :class:`RefreshLockedError` if one is running."""
    from offline_jobs.profile_builder import BuildOptions, build_profiles

    settings = settings or RefreshSettings()
    state_path = settings.state_dir / "state.json"
    started = time.perf_counter()
    with refresh_lock(settings.state_dir / "refresh.lock"):
        state = RefreshState.load(state_path)
        report = RefreshReport()
        try:
            with _timed(report.durations, "read_logs"):
                feedback = read_events(settings.feedback_log, state.feedback_offset)
                catalog = read_events(settings.catalog_log, state.catalog_offset)
            report.feedback_events, report.catalog_events = len(feedback.events), len(catalog.events)
            report.malformed_lines = feedback.malformed + catalog.malformed
            report.watermarks = {"feedback": feedback.end_offset, "catalog": catalog.end_offset}
            changes = changes_of(feedback.events, catalog.events, settings.refresh_min_rating)
            if changes.users or changes.items:
                _refresh_entities(
                    settings, state, report, feedback, catalog, changes, build_profiles, BuildOptions
                )
            report.status = "refreshed" if (changes.users or changes.items) else "noop"
            state.feedback_offset, state.catalog_offset = feedback.end_offset, catalog.end_offset
            state.last_success_at = datetime.now(UTC).isoformat(timespec="seconds")
            state.entities_total += len(report.users) + len(report.items)
        except Exception as exc:
            report.status = "failed"
            report.error = f"{type(exc).__name__}: {exc}"
            state.failures_total += 1
            raise
        finally:
            state.runs += 1
            state.last_run_at = datetime.now(UTC).isoformat(timespec="seconds")
            report.seconds = round(time.perf_counter() - started, 3)
            state.save(state_path)
            atomic_write_text(
                settings.state_dir / "last_report.json", json.dumps(asdict(report), indent=2, default=str)
            )
            write_metrics(settings.work_dir / "metrics" / "refresh.prom", state, report)
            log.info("refresh %s", report.status, extra={"report": asdict(report)})
    return report


def _refresh_entities(
    settings: RefreshSettings,
    state: RefreshState,
    report: RefreshReport,
    feedback: LogChunk,
    catalog: LogChunk,
    changes: Any,
    build_profiles: Any,
    build_options: Any,
) -> None:
    bundle_dir = resolve_pointer(settings.bundles_root)
    manifest = read_manifest(bundle_dir)
    store = settings.profile_store or (
        Path(manifest.profiles.store_path) if manifest.profiles.store_path else None
    )
    if store is None or not store.exists():
        raise RuntimeError(f"the live bundle {manifest.bundle_version} names no profile store to refresh")
    with _timed(report.durations, "live_data"):
        ctx, counts = _live_context(
            manifest,
            settings,
            _read_all(settings.feedback_log, feedback.end_offset),
            _read_all(settings.catalog_log, catalog.end_offset),
        )
    report.live_data = counts
    user_index, item_index = ctx.dataset.user_index(), ctx.dataset.item_index()
    users = sorted(user_index[u] for u in changes.users if u in user_index)
    items = sorted(item_index[i] for i in changes.items if i in item_index)
    report.users = [str(ctx.dataset.user_ids[u]) for u in users]
    report.items = [str(ctx.dataset.item_ids[i]) for i in items]
    work = (
        settings.state_dir
        / "runs"
        / f"f{feedback.start_offset}-{feedback.end_offset}_c{catalog.start_offset}-{catalog.end_offset}"
    )
    options = build_options(
        strategy=settings.refresh_strategy, k=manifest.profiles.k, version=manifest.profiles.store_version
    )
    with _timed(report.durations, "generate"):
        report.generation = build_profiles(ctx, users, items, work, options)
    with _timed(report.durations, "merge_store"):
        report.store = merge_into_store(store, work)
    bodies = _upsert_requests(
        store,
        {"user": report.users, "item": report.items},
        manifest.profiles.store_version,
        settings.refresh_batch,
    )
    with _timed(report.durations, "write_online"):
        report.writes = write_online(settings, bodies)
    _crash_point("upsert")


def cmd_refresh(args: Any) -> int:
    """``profilerec-jobs refresh``: one run with the settings from the environment (and flags)."""
    overrides = {
        k: v for k, v in {"refresh_strategy": args.strategy, "profile_store": args.profile_store}.items() if v
    }
    settings = RefreshSettings(**overrides)
    try:
        report = run_refresh(settings)
    except RefreshLockedError as exc:
        print(f"refresh skipped: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    print(
        json.dumps(
            {
                "status": report.status,
                "users": len(report.users),
                "items": len(report.items),
                "seconds": report.seconds,
            }
        )
    )
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("refresh", help="daily refresh: regenerate the profiles of whoever changed")
    p.add_argument(
        "--strategy", help="proex | reclm | duet | extractive (default PROFILEREC_REFRESH_STRATEGY or proex)"
    )
    p.add_argument("--profile-store", help="default: the live bundle's profile store")
    p.set_defaults(func=cmd_refresh)
