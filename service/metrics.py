"""Prometheus metrics of the service.

Works with one process or several uvicorn workers: when ``PROMETHEUS_MULTIPROC_DIR`` is set (before the
process starts), ``/metrics`` aggregates every worker's values with the multiprocess collector.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prom_multiprocess

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
STAGE_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

REQUESTS = Counter(
    "profilerec_http_requests_total",
    "HTTP requests by route template, method and status",
    ["route", "method", "status"],
)
REQUEST_LATENCY = Histogram(
    "profilerec_http_request_duration_seconds",
    "HTTP request latency by route template, method and status",
    ["route", "method", "status"],
    buckets=LATENCY_BUCKETS,
)
STAGE_LATENCY = Histogram(
    "profilerec_stage_duration_seconds",
    "Latency of one stage of a request (cache, qdrant_profiles, user_tower, text_encoder, retrieval ...)",
    ["stage"],
    buckets=STAGE_BUCKETS,
)
CACHE_REQUESTS = Counter(
    "profilerec_profile_cache_requests_total",
    "Profile cache lookups by result (hit, miss, error, skipped)",
    ["result"],
)
ERRORS = Counter("profilerec_errors_total", "Errors returned to clients or absorbed, by type", ["type"])
RECOMMENDATIONS = Counter(
    "profilerec_recommendations_total",
    "Recommendation answers by strategy (personalized, profile_only, popular)",
    ["strategy"],
)
MODEL_INFO = Gauge(
    "profilerec_model_info",
    "The bundle being served (value 1 for the live one)",
    ["bundle_version", "model_kind", "proex", "dataset"],
    multiprocess_mode="liveall",
)
BUNDLE_RELOADS = Counter("profilerec_bundle_reloads_total", "Bundle loads by outcome", ["outcome"])
DEPENDENCY_UP = Gauge(
    "profilerec_dependency_up",
    "1 when a dependency answered its last check",
    ["dependency"],
    multiprocess_mode="liveall",
)
FEEDBACK_EVENTS = Counter("profilerec_feedback_events_total", "Feedback events appended to the log", ["type"])
ITEMS_UPSERTED = Counter("profilerec_items_upserted_total", "Items added or updated through PUT /v1/items")


_STAGES: dict[str, Any] = {}


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Time a stage of request handling into :data:`STAGE_LATENCY`."""
    started = time.perf_counter()
    try:
        yield
    finally:
        child = _STAGES.get(name)
        if child is None:
            child = _STAGES[name] = STAGE_LATENCY.labels(stage=name)
        child.observe(time.perf_counter() - started)


_SERVED: dict[str, dict[str, str]] = {}  # the labels this process last set to 1


def set_model_info(bundle_version: str, model_kind: str, proex: bool, dataset: str) -> None:
    """Mark the bundle this process serves (1) and the one it served before as not served (0): with
    several workers, ``/metrics`` has one series per worker (``pid``), so it shows how many workers
    serve which version. (``clear()`` cannot remove a series across worker processes.)"""
    labels = {"bundle_version": bundle_version, "model_kind": model_kind, "proex": str(proex).lower()}
    labels["dataset"] = dataset
    previous = _SERVED.get("labels")
    if previous is not None and previous != labels:
        MODEL_INFO.labels(**previous).set(0)
    MODEL_INFO.labels(**labels).set(1)
    _SERVED["labels"] = labels


def render_latest() -> tuple[bytes, str]:
    """The exposition text of this process, or of all workers in multiprocess mode. (Batch jobs such as
    the refresh write their own textfile, scraped through a textfile collector, not through here.)"""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        prom_multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
