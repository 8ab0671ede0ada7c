"""The daily profile refresh: regenerate the profiles of whoever changed since the last run.

One run:

1. takes the refresh lock (``<work>/refresh/refresh.lock``; a second run exits at once);
2. reads the feedback and catalogue logs from its watermarks (byte offsets of complete lines);
3. finds the users with new positive feedback and the items with new feedback or added/edited
   through the API; nothing new means a no-op;
4. rebuilds their profiles with the same strategies and validation as the generation job, on the live
   data (the live bundle's dataset plus every logged event so far), re-embeds them and merges them into
   the live profile store; an entity whose profile fails, and a log record that cannot be used, is
   quarantined (a line in ``<work>/refresh/dead_letter.jsonl`` with the stage, the reason and where it
   failed; the traceback in the log and the run report) and the others go on;
5. writes them to the live Qdrant profiles collection, re-encodes changed catalogue items through the
   item tower, and deletes exactly their Redis cache keys (in-process with the service's own code when
   it can open Qdrant, else through the running service's admin API, which owns the embedded storage);
6. only then moves the watermarks, and writes a run report (``last_report.json``: what was done,
   including what was quarantined) and a Prometheus textfile.

Its cost grows with the number of changed entities, not with the catalogue (the embedded model's
decode batch, whose KV cache is allocated up front, is sized for them). It is idempotent (a second run
finds nothing new) and crash-safe: a run killed anywhere before step 6 leaves the watermarks where
they were, so the next run redoes the same entities, and every write is an upsert or a delete. The
generation cache (``<work>/refresh/cache``) is shared by every run and keyed by what is generated (the
model, the prompt built from the entity's inputs, the sampling parameters), so a rerun answers every
prompt it has seen from it, even when new events arrived in between; each run writes its profiles
into a folder of its own under ``<work>/refresh/runs`` (the last few are kept).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from offline_jobs.failures import EntityFailure, exception_site
from offline_jobs.jobs.cache import CACHE_FILE
from offline_jobs.refresh.live_data import apply_logs, catalog_problem, changes_of, feedback_problem
from offline_jobs.refresh.online import upsert_requests, write_online
from offline_jobs.refresh.state import (
    CACHE_MAX_AGE_S,
    CRASH_ENV,
    DEAD_LETTER_FILE,
    RUNS_KEPT,
    RefreshFailedError,
    RefreshLockedError,
    RefreshReport,
    RefreshSettings,
    RefreshState,
)
from rec_contract.atomic import atomic_write_text
from rec_contract.bundle import BundleManifest, read_manifest, resolve_pointer
from rec_contract.event_log import LogChunk, append_events, read_events
from rec_contract.profile_store import PROFILES_FILE, merge_into_store, read_profiles, read_store_vectors

log = logging.getLogger(__name__)


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
def _stage(report: RefreshReport, name: str) -> Iterator[None]:
    """Time a stage of the run; an exception out of it names it as the failed stage."""
    started = time.perf_counter()
    log.info("refresh stage %s", name)  # where a killed run was (benchmarks/refresh_kills.py)
    try:
        yield
    except BaseException:
        report.failed_stage = report.failed_stage or name
        raise
    finally:
        report.durations[name] = round(time.perf_counter() - started, 3)


def _read_all(path: Path, end: int) -> LogChunk:
    """Every complete event of a log up to byte ``end`` (the histories the profiles are built from)."""
    return read_events(path, 0, max_bytes=end) if end else LogChunk([], 0, 0, 0)


def _crash_point(name: str) -> None:
    if os.environ.get(CRASH_ENV) == name:
        log.error("fault injection: exiting at %s", name)
        os._exit(137)


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
    """The textfile a Prometheus textfile collector scrapes (``profilerec_refresh_*``): what the last
    run did (entities refreshed, entities and records quarantined) and the running totals."""
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
    totals = (
        ("entities", "Users and items whose profiles were refreshed", state.entities_total),
        ("failures", "Refresh runs that failed", state.failures_total),
        ("quarantined", "Entities and log records quarantined (dead-letter file)", state.quarantined_total),
    )
    for name, help_text, value in totals:
        Counter(f"profilerec_refresh_{name}", help_text, registry=registry).inc(value)
    last_run = (
        ("entities", "Entities the last run refreshed", len(report.users) + len(report.items)),
        ("quarantined", "Entities and log records the last run quarantined", len(report.quarantined)),
        ("failed", "1 if the last run failed (the watermarks did not move)", int(report.status == "failed")),
    )
    for name, help_text, value in last_run:
        Gauge(f"profilerec_refresh_last_run_{name}", help_text, registry=registry).set(value)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)


def run_refresh(settings: RefreshSettings | None = None) -> RefreshReport:
    """One refresh run (see the module docstring). Raises :class:`RefreshLockedError` if one is running."""
    settings = settings or RefreshSettings()
    state_path = settings.state_dir / "state.json"
    started = time.perf_counter()
    with refresh_lock(settings.state_dir / "refresh.lock"):
        state = RefreshState.load(state_path)
        report = RefreshReport()
        try:
            with _stage(report, "read_logs"):
                feedback = read_events(settings.feedback_log, state.feedback_offset)
                catalog = read_events(settings.catalog_log, state.catalog_offset)
            report.feedback_events, report.catalog_events = len(feedback.events), len(catalog.events)
            report.malformed_lines = feedback.malformed + catalog.malformed
            report.watermarks = {"feedback": feedback.end_offset, "catalog": catalog.end_offset}
            _quarantine(settings, report, _bad_records(settings, feedback, catalog))
            changes = changes_of(feedback.events, catalog.events, settings.refresh_min_rating)
            report.changed = {"users": len(changes.users), "items": len(changes.items)}
            if changes.users or changes.items:
                _refresh_entities(settings, report, feedback, catalog, changes)
            report.status = (
                "partial" if report.quarantined else "refreshed" if report.users or report.items else "noop"
            )
            _write_dead_letter(settings, report)  # with the watermarks: a rerun does not repeat them
            state.feedback_offset, state.catalog_offset = feedback.end_offset, catalog.end_offset
            state.last_success_at = datetime.now(UTC).isoformat(timespec="seconds")
            state.entities_total += len(report.users) + len(report.items)
            state.quarantined_total += len(report.quarantined)
        except Exception as exc:
            report.status = "failed"
            report.error = f"{type(exc).__name__}: {exc}"
            report.failed_stage = report.failed_stage or "refresh"
            report.traceback = traceback.format_exc()
            state.failures_total += 1
            failure = RefreshFailedError(
                f"refresh failed at stage {report.failed_stage} ({exception_site(exc)}): {report.error} "
                f"(report: {settings.state_dir / 'last_report.json'})"
            )
            log.error("%s", failure, exc_info=exc)
            raise failure from exc
        finally:
            state.runs += 1
            state.last_run_at = datetime.now(UTC).isoformat(timespec="seconds")
            report.seconds = round(time.perf_counter() - started, 3)
            state.save(state_path)
            atomic_write_text(
                settings.state_dir / "last_report.json", json.dumps(asdict(report), indent=2, default=str)
            )
            write_metrics(settings.work_dir / "metrics" / "refresh.prom", state, report)
            summary = {k: v for k, v in asdict(report).items() if k != "traceback"}
            log.info("refresh %s", report.status, extra={"report": summary})
    return report


def _refresh_entities(
    settings: RefreshSettings,
    report: RefreshReport,
    feedback: LogChunk,
    catalog: LogChunk,
    changes: Any,
) -> None:
    from offline_jobs.jobs.builder import BuildOptions, build_profiles

    with _stage(report, "bundle"):
        bundle_dir = resolve_pointer(settings.bundles_root)
        manifest = read_manifest(bundle_dir)
        store = settings.profile_store or (
            Path(manifest.profiles.store_path) if manifest.profiles.store_path else None
        )
        if store is None or not store.exists():
            raise RuntimeError(f"the live bundle {manifest.bundle_version} names no profile store to refresh")
    with _stage(report, "live_data"):
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
    work = _new_run_folder(settings.state_dir)
    report.run_folder = str(work)
    options = BuildOptions(
        strategy=settings.refresh_strategy,
        k=manifest.profiles.k,
        version=manifest.profiles.store_version,
        cache_path=_shared_cache(settings.state_dir),
        isolate_failures=True,
        inputs=_inputs_digest(ctx.dataset),
    )
    with _stage(report, "generate"):
        report.generation = build_profiles(
            ctx, users, items, work, options, _job_settings(len(users) + len(items), manifest.profiles.k)
        )
    failed = [EntityFailure.from_dict(f) for f in report.generation.pop("failed", [])]
    _quarantine(settings, report, [(f, None) for f in failed])
    _crash_point("generate")
    done = _entities_in(work)
    if not (done["user"] or done["item"]):
        return
    with _stage(report, "merge_store"):
        report.kept_good = keep_good_profiles(store, work)
        report.store = merge_into_store(store, work)
    bodies = upsert_requests(
        work, done, manifest.profiles.store_version, settings.refresh_batch
    )  # from the run folder: only the refreshed entities are read
    with _stage(report, "write_online"):
        report.writes = write_online(settings, bodies)
    report.users, report.items = done["user"], done["item"]
    _crash_point("upsert")


# ---------------------------------------------------------------------- the run's helpers
def _passed(row: dict[str, Any]) -> bool:
    """An LLM profile that passed the grounding check (a good profile)."""
    if row["is_fallback"]:
        return False
    quality = row["quality"]
    if isinstance(quality, str):
        try:
            quality = json.loads(quality)
        except ValueError:
            return False
    grounding = quality.get("grounding") if isinstance(quality, dict) else None
    return isinstance(grounding, dict) and grounding.get("passed") is True


def keep_good_profiles(store: Path, work: Path) -> int:
    """Put back, in the run folder ``work``, every live profile that passed the grounding check where the
    refresh produced only a fallback for the same slot (its generation failed validation or the check):
    a refreshed profile that fails never replaces a good one. Returns how many slots were kept."""
    from rec_contract.profile_store import write_profile_vectors, write_profiles

    if not (work / PROFILES_FILE).exists() or not (store / PROFILES_FILE).exists():
        return 0
    new_rows = read_profiles(work)
    changed = {(str(r["entity_type"]), str(r["entity_id"])) for r in new_rows}
    live = {
        (str(r["entity_type"]), str(r["entity_id"]), int(r["slot"])): r
        for r in read_profiles(store)
        if (str(r["entity_type"]), str(r["entity_id"])) in changed
    }
    kept: dict[tuple[str, str], dict[int, int]] = {}  # entity -> new slot -> old slot
    for i, row in enumerate(new_rows):
        key = (str(row["entity_type"]), str(row["entity_id"]), int(row["slot"]))
        old = live.get(key)
        if row["is_fallback"] and old is not None and _passed(old):
            quality = json.loads(old["quality"]) if isinstance(old["quality"], str) else dict(old["quality"])
            quality["kept_over_refresh"] = True
            new_rows[i] = {**old, "quality": quality}
            kept.setdefault(key[:2], {})[key[2]] = key[2]
    if not kept:
        return 0
    live_vectors = {(t, e): v for t, e, v in read_store_vectors(store)[0] if (t, e) in kept}
    entries, model, version = read_store_vectors(work)
    merged = []
    for entity_type, entity_id, new_vectors in entries:
        slots = kept.get((entity_type, entity_id))
        old_vectors = live_vectors.get((entity_type, entity_id))
        vectors = new_vectors.copy()
        if slots and old_vectors is not None and old_vectors.shape[1] == vectors.shape[1]:
            for slot in slots:
                if slot < len(vectors) and slot < len(old_vectors):
                    vectors[slot] = old_vectors[slot]
        merged.append((entity_type, entity_id, vectors))
    write_profiles(work, new_rows)
    write_profile_vectors(work, merged, model, version)
    n = sum(len(s) for s in kept.values())
    log.info("kept %d good live profile(s) over failed refreshed ones", n)
    return n


def _job_settings(n_entities: int, k: int) -> Any:
    """The generation settings with the embedded model's decode batch no larger than ``n_entities``
    can use: its KV cache is allocated for the whole batch up front (the default 64 sequences hold
    4.2 GB in bfloat16, twice that in float32), which made a one-entity refresh peak at 8 GB."""
    from offline_jobs.settings import JobSettings

    settings = JobSettings()
    needed = max(1, n_entities * k)
    if settings.llama_batch_seqs > needed:
        settings = settings.model_copy(update={"llama_batch_seqs": needed})
    return settings


def _shared_cache(state_dir: Path) -> Path:
    """The generation cache every run shares (keyed by model, prompt and sampling, not by run)."""
    from offline_jobs.jobs.cache import JobCache

    path = state_dir / "cache" / CACHE_FILE
    cache = JobCache(path, run_id="prune")
    try:
        cache.prune(CACHE_MAX_AGE_S)
    finally:
        cache.close()
    return path


def _new_run_folder(state_dir: Path) -> Path:
    """A new folder for this run's profiles; older run folders beyond the newest few are removed."""
    runs = state_dir / "runs"
    old = (
        sorted((p for p in runs.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
        if runs.is_dir()
        else []
    )
    for stale in old[: max(0, len(old) - (RUNS_KEPT - 1))]:
        shutil.rmtree(stale, ignore_errors=True)
    folder = runs / f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    folder.mkdir(parents=True)
    return folder


def _inputs_digest(dataset: Any) -> str:
    """A digest of the live item text and user attributes. The dataset fingerprint in the generation
    config covers the interactions only, so without it an item whose text was edited again with no new
    interaction would reuse the profiles the cache finished for its previous text."""
    import hashlib

    import pandas as pd

    digest = hashlib.sha256()
    for table in (dataset.items, dataset.users):
        if table is not None:
            digest.update(pd.util.hash_pandas_object(table.astype(str), index=True).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def _entities_in(folder: Path) -> dict[str, list[str]]:
    """The users and items a run folder has profiles for (the ones generated successfully)."""
    done: dict[str, list[str]] = {"user": [], "item": []}
    if (folder / PROFILES_FILE).exists():
        keys = sorted({(str(r["entity_type"]), str(r["entity_id"])) for r in read_profiles(folder)})
        for entity_type, entity_id in keys:
            done[entity_type].append(entity_id)
    return done


def _bad_records(
    settings: RefreshSettings, feedback: LogChunk, catalog: LogChunk
) -> list[tuple[EntityFailure, dict[str, Any]]]:
    """The new log events that cannot be used (they are skipped by the live data too)."""
    bad = []
    for kind, path, chunk, problem_of in (
        ("feedback_event", settings.feedback_log, feedback, feedback_problem),
        ("catalog_event", settings.catalog_log, catalog, catalog_problem),
    ):
        for event in chunk.events:
            reason = problem_of(event)
            if reason:
                entity_id = str(event.get("item_id" if kind == "catalog_event" else "user_id") or "")
                bad.append((EntityFailure.rejected(kind, entity_id, "read_logs", reason, str(path)), event))
    return bad


def _quarantine(
    settings: RefreshSettings,
    report: RefreshReport,
    entries: Sequence[tuple[EntityFailure, dict[str, Any] | None]],
) -> None:
    """Set failed entities and bad log records (``record``) aside, in the run report."""
    for failure, record in entries:
        entry: dict[str, Any] = failure.as_dict()
        if record is not None:
            entry["record"] = record
        report.quarantined.append(entry)
        log.warning(
            "quarantined %s (dead letter: %s)", failure.message(), settings.state_dir / DEAD_LETTER_FILE
        )


def _write_dead_letter(settings: RefreshSettings, report: RefreshReport) -> None:
    """One line per quarantined entity or record in ``<state dir>/dead_letter.jsonl``: ``at``, the
    run, ``entity_type``, ``entity_id``, ``stage``, ``reason``, ``where``, ``traceback`` (``record``:
    the log event itself)."""
    at = datetime.now(UTC).isoformat(timespec="seconds")
    lines = [{"at": at, "run_started_at": report.started_at, **entry} for entry in report.quarantined]
    append_events(settings.state_dir / DEAD_LETTER_FILE, lines)
