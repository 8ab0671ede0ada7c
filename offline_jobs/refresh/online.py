"""The refresh's writes to the online stores: the changed entities' profiles as admin-API bodies, applied
in this process through :mod:`service.online_store` (the service's own write path), or through the running
service's admin API when it holds the embedded Qdrant storage."""

from __future__ import annotations

import asyncio
import fcntl
import os
from pathlib import Path
from typing import Any

import httpx

from offline_jobs.refresh.state import RefreshSettings
from rec_contract.explanations import label_of_row
from rec_contract.profile_store import read_profiles, read_store_vectors


def upsert_requests(
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
                    "labels": [label_of_row(r) for r in ordered],
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


def embedded_storage_locked(path: Path) -> bool:
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


def _write_in_process(settings: RefreshSettings, bodies: list[dict[str, Any]]) -> dict[str, Any]:
    """The service's own write path (towers, Qdrant, Redis: :mod:`service.online_store`) in this process."""
    from service.online_store import write_profiles

    return asyncio.run(
        write_profiles(
            bodies,
            work_dir=settings.work_dir,
            bundles_root=settings.bundles_root,
            qdrant_url=settings.qdrant_url,
            qdrant_path=settings.qdrant_path,
            qdrant_api_key=settings.qdrant_api_key,
            redis_url=settings.redis_url,
        )
    )


def _write_through_service(settings: RefreshSettings, bodies: list[dict[str, Any]]) -> dict[str, Any]:
    key = settings.admin_api_key
    headers = {"X-Admin-Key": key.get_secret_value()} if key is not None else {}
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
    if settings.qdrant_url is None and embedded_storage_locked(settings.qdrant_path):
        return _write_through_service(settings, bodies)
    return _write_in_process(settings, bodies)
