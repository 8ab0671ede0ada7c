"""The writes to the online stores, in one place: item points and profile points in Qdrant (or the
embedded store), their content vectors, and the invalidation of what the Redis cache computed from the old
ones. The service's write routes call :func:`upsert_item`, :func:`delete_item` and :func:`upsert_profiles`;
the offline jobs (the daily refresh) call :func:`write_profiles`, which opens the same runtime in their own
process and applies the same :func:`upsert_profiles`, so both paths write alike."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from rec_contract.content import item_text
from rec_contract.event_log import append_events
from rec_contract.qdrant_schema import item_payload, now_iso
from service.errors import BadRequestError, NotFoundError
from service.item_encoding import encode_text_item, write_content
from service.metrics import ITEMS_UPSERTED, stage
from service.runtime import Runtime, build_runtime
from service.schemas import (
    ItemUpsertRequest,
    ItemUpsertResponse,
    ProfilesUpsertRequest,
    ProfilesUpsertResponse,
)
from service.settings import ServiceSettings
from service.towers import item_vector


async def upsert_item(rt: Runtime, item_id: str, request: ItemUpsertRequest) -> ItemUpsertResponse:
    """Add an item (embedded from its text, zero-shot) or update a catalogue item's metadata, then log
    it in the catalogue log so the refresh job writes its LLM profiles."""
    live = rt.holder.require()
    live.sync()
    bundle = live.bundle
    description = item_text(request.title, request.categories, request.text)
    with stage("items_lookup"):
        existing = await live.items.vectors([item_id])
    index = bundle.item_index.get(item_id)
    content: np.ndarray | None = None  # a catalogue item's is embedded from its (new) title and categories
    if index is not None:  # a catalogue item keeps its (trained or refreshed) vector; its metadata changes
        vector = existing.get(item_id, np.asarray(bundle.item_vectors[index], np.float32))
        popularity = int(bundle.items_meta[index].get("popularity", 0))
        source = "model"
    else:
        with stage("item_tower"):
            text_vec, content, vector, source = await asyncio.to_thread(
                encode_text_item, live, item_id, request.title, request.categories, request.text
            )
        popularity = 0
        with stage("profiles_upsert"):
            await live.profiles.upsert("item", item_id, text_vec, [description], "item_text")
    payload = item_payload(
        item_id,
        -1 if index is None else index,
        request.title,
        request.categories,
        popularity,
        profile_snippet=request.text[: rt.settings.snippet_chars],
        source=source,
    )
    with stage("items_upsert"):
        await live.items.upsert(item_id, vector, payload)
        await write_content(live, item_id, content, payload)
    event = {
        "type": "item_upsert",
        "item_id": item_id,
        "title": request.title,
        "categories": request.categories,
        "text": request.text,
        "received_at": datetime.now(UTC).isoformat(),
    }
    await asyncio.to_thread(append_events, rt.settings.catalog_log, [event])
    rt.categories.note(request.categories)
    ITEMS_UPSERTED.inc()
    return ItemUpsertResponse(
        item_id=item_id, created=item_id not in existing, vector_source=source, model_version=live.version
    )


async def delete_item(rt: Runtime, item_id: str) -> None:
    """Remove an item from every later answer (logged in the catalogue log for the jobs)."""
    live = rt.holder.require()
    live.sync()
    if not await live.items.delete(item_id):
        raise NotFoundError(f"no item {item_id!r}")
    if live.content_index is not None:
        await live.content_index.delete(item_id)
    event = {"type": "item_delete", "item_id": item_id, "received_at": datetime.now(UTC).isoformat()}
    await asyncio.to_thread(append_events, rt.settings.catalog_log, [event])


async def upsert_profiles(rt: Runtime, request: ProfilesUpsertRequest) -> ProfilesUpsertResponse:
    """Write refreshed profiles where the live bundle reads them and invalidate what was computed from
    the old ones (cached user vectors; for items, their vector in the item index is re-encoded).

    The refresh job calls this in-process (or through the admin route)."""
    live = rt.holder.require()
    live.sync()
    bundle = live.bundle
    version = bundle.manifest.profiles.store_version
    if request.store_version != version:
        raise BadRequestError(f"store_version {request.store_version!r} is not the live one ({version!r})")
    dim = bundle.manifest.profiles.text_dim
    for entry in request.profiles:
        if len(entry.vectors[0]) != dim:
            raise BadRequestError(
                f"{entry.entity_id}: vectors have dimension {len(entry.vectors[0])}, expected {dim}"
            )
    with stage("profiles_upsert"):
        for entry in request.profiles:
            await live.profiles.upsert(
                request.entity_type,
                entry.entity_id,
                np.asarray(entry.vectors, np.float32),
                entry.texts,
                entry.strategy,
                entry.is_fallback,
                [label.model_dump() for label in entry.labels] if entry.labels is not None else None,
            )
    ids = [p.entity_id for p in request.profiles]
    invalidated = await rt.cache.invalidate(request.entity_type, ids)
    if request.entity_type == "item":  # the item side of the model depends on item profiles: re-encode
        payloads = await live.items.payloads(ids)
        for entry in request.profiles:
            payload = payloads.get(entry.entity_id)
            if payload is None:
                continue  # not in the item index: nothing to re-encode
            vector, _ = await asyncio.to_thread(
                item_vector,
                bundle,
                bundle.item_index.get(entry.entity_id),
                np.asarray(entry.vectors, np.float32),
            )
            payload = {
                **payload,
                "profile_snippet": entry.texts[0][: rt.settings.snippet_chars],
                "updated_at": now_iso(),
            }
            with stage("items_upsert"):
                await live.items.upsert(entry.entity_id, vector, payload)
    return ProfilesUpsertResponse(upserted=len(request.profiles), invalidated=invalidated)


async def write_profiles(
    bodies: list[dict[str, Any]],
    *,
    work_dir: Path,
    bundles_root: Path | None,
    qdrant_url: str | None,
    qdrant_path: Path | None,
    qdrant_api_key: str | None,
    redis_url: str | None,
) -> dict[str, Any]:
    """Apply admin-API ``ProfilesUpsertRequest`` bodies in this process, through the service's own runtime
    (the live bundle's towers, Qdrant, Redis): what ``POST /v1/admin/profiles`` does, without a service."""
    rt = build_runtime(
        ServiceSettings(
            work_dir=work_dir,
            bundles_root=bundles_root,
            qdrant_url=qdrant_url,
            qdrant_path=qdrant_path,
            qdrant_api_key=qdrant_api_key,
            redis_url=redis_url,
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
