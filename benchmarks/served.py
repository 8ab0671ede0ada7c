"""The service in-process for quality benchmarks: the FastAPI app on a bundles root (read-only) with
private online state, so what a benchmark measures is what the service serves."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def service(bundles_root: Path, scratch: Path, **settings: Any) -> Iterator[Any]:
    """The app on ``bundles_root`` (read-only) with private online state, no Redis, exact retrieval."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import ServiceSettings

    scratch.mkdir(parents=True, exist_ok=True)
    values: dict[str, Any] = {
        "bundles_root": bundles_root,
        "work_dir": scratch,
        "online_dir": scratch / "online",
        "feedback_log": scratch / "feedback" / "feedback.jsonl",
        "catalog_log": scratch / "feedback" / "catalog.jsonl",
        "redis_url": None,
        "engine": "exact",
        "reload_interval_s": 0,
        "auth": "off",  # in-process, no port: nobody else can reach it
        **settings,
    }
    with TestClient(create_app(ServiceSettings(**values))) as client:
        yield client


def ok(response: Any) -> dict[str, Any]:
    if response.status_code >= 300:
        raise RuntimeError(
            f"{response.request.method} {response.request.url}: {response.status_code} {response.text}"
        )
    return dict(response.json())
