"""The service's logic as plain async functions over a :class:`Runtime` (routes only call these).

Known user (ProEx Algorithm 2 at request time): the user's K profile vectors come from Redis, or on a
miss from the Qdrant profiles collection (then cached); the ONNX user tower maps each profile, mean-pools
them and adds the collaborative part (LightGCN: the trained user vector; Mult-VAE: the encoder applied to
the user's history); Qdrant returns the top-N items by dot product with seen items excluded.

Cold start: an unknown user with no profile gets the most popular items; a request with liked items
and/or text builds the user vector from those (LightGCN: mean of the liked items' collaborative vectors;
Mult-VAE: the liked items as history; text: the ONNX text encoder, then the tower's profile mapping).
New items are embedded from their text and pushed through the item tower (zero-shot).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from rec_contract.event_log import append_events
from rec_contract.qdrant_schema import item_payload, now_iso, profile_point
from service.bundle_runtime import LoadedBundle
from service.errors import BadRequestError, UnknownItemsError
from service.metrics import FEEDBACK_EVENTS, ITEMS_UPSERTED, RECOMMENDATIONS, stage
from service.profile_cache import EntityProfiles
from service.runtime import Runtime
from service.schemas import (
    ColdStartRequest,
    FeedbackEvent,
    ItemUpsertRequest,
    ItemUpsertResponse,
    ProfilesUpsertRequest,
    ProfilesUpsertResponse,
    RecommendationResponse,
    RecommendedItem,
    Strategy,
)


def _check_n(rt: Runtime, n: int) -> None:
    if n > rt.settings.max_n:
        raise BadRequestError(f"n={n} is above the limit of {rt.settings.max_n}", limit=rt.settings.max_n)


async def load_profiles(
    rt: Runtime, bundle: LoadedBundle, entity_type: str, raw_id: str
) -> EntityProfiles | None:
    """An entity's profile vectors: Redis first, then Qdrant (and fill the cache)."""
    version = bundle.manifest.profiles.store_version
    with stage("cache"):
        cached = await rt.cache.get(version, entity_type, raw_id)
    if cached is not None:
        return cached
    with stage("qdrant_profiles"):
        found = await rt.index.profile(bundle.manifest.profiles_collection, entity_type, raw_id)
    if found is None:
        return None
    value = EntityProfiles(vectors=found[0], texts=found[1])
    await rt.cache.put(version, entity_type, raw_id, value)
    return value


def profile_inputs(bundle: LoadedBundle, vectors: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Tower inputs ``profiles [1, k, d]`` and ``profile_mask [1, k]`` (one masked zero slot if none)."""
    dim = bundle.manifest.profiles.text_dim
    if vectors is None or len(vectors) == 0:
        return np.zeros((1, 1, dim), np.float32), np.zeros((1, 1), np.float32)
    kept = np.asarray(vectors, dtype=np.float32)[: max(1, bundle.manifest.profiles.k)]
    if kept.shape[1] != dim:
        raise BadRequestError(f"profile vectors have dimension {kept.shape[1]}, the model expects {dim}")
    return kept[None], np.ones((1, len(kept)), np.float32)


def user_vector(
    bundle: LoadedBundle,
    collab_user: int | None,
    history_items: Sequence[int] | np.ndarray,
    profiles: np.ndarray | None,
    fold_in_items: Sequence[int] = (),
) -> np.ndarray:
    """Run the user tower. ``collab_user``: the user's index in the bundle (None for a new user);
    ``history_items``: item indices the user interacted with (Mult-VAE input); ``fold_in_items``: liked
    items whose collaborative vectors stand in for a new user's (LightGCN cold start)."""
    prof, mask = profile_inputs(bundle, profiles)
    with stage("user_tower"):
        if bundle.kind == "lightgcn":
            assert bundle.collab_users is not None and bundle.collab_items is not None
            if collab_user is not None:
                collab = bundle.collab_users[collab_user][None]
            elif len(fold_in_items):
                collab = bundle.collab_items[list(fold_in_items)].mean(axis=0, keepdims=True)
            else:
                collab = np.zeros((1, bundle.manifest.collab_dim), np.float32)
            out = bundle.user_tower(collab=collab, profiles=prof, profile_mask=mask)
        else:
            history = np.zeros((1, bundle.n_items), np.float32)
            if len(history_items):
                history[0, list(history_items)] = 1.0
            out = bundle.user_tower(history=history, profiles=prof, profile_mask=mask)
    return out[0]


def _response_items(hits: Sequence[Any], explain: bool, snippet_chars: int) -> list[RecommendedItem]:
    return [
        RecommendedItem(
            item_id=h.item_id,
            score=h.score,
            title=str(h.payload.get("title", "")),
            categories=list(h.payload.get("categories", [])),
            profile_snippet=str(h.payload.get("profile_snippet", ""))[:snippet_chars] if explain else None,
        )
        for h in hits
    ]


def popular_items(
    bundle: LoadedBundle,
    n: int,
    exclude: set[str],
    categories: Sequence[str],
    explain: bool,
    snippet_chars: int,
) -> list[RecommendedItem]:
    """The most popular catalogue items, with the same filters as a personalised answer."""
    wanted = set(categories)
    out: list[RecommendedItem] = []
    for index in bundle.popular_order:
        raw = bundle.item_ids[index]
        meta = bundle.items_meta[index]
        if raw in exclude or (wanted and not wanted.intersection(meta.get("categories", []))):
            continue
        out.append(
            RecommendedItem(
                item_id=raw,
                score=float(meta.get("popularity", 0)),
                title=str(meta.get("title", raw)),
                categories=list(meta.get("categories", [])),
                profile_snippet=str(meta.get("profile_snippet", ""))[:snippet_chars] if explain else None,
            )
        )
        if len(out) >= n:
            break
    return out


async def recommend_for_user(
    rt: Runtime, user_id: str, n: int, categories: Sequence[str], exclude: Sequence[str], explain: bool
) -> RecommendationResponse:
    _check_n(rt, n)
    bundle = rt.holder.require()
    index = bundle.user_index.get(user_id)
    profiles = await load_profiles(rt, bundle, "user", user_id)
    recent = await rt.cache.seen(user_id)
    recent_known = [bundle.item_index[i] for i in recent if i in bundle.item_index]
    seen_items = bundle.seen.items_of(index) if index is not None else np.zeros(0, np.int64)
    excluded = set(exclude) | recent | {bundle.item_ids[i] for i in seen_items}

    has_collab = index is not None or (bundle.kind == "multvae" and bool(recent_known))
    strategy: Strategy
    if not has_collab and profiles is None:
        strategy = "popular"
        items = popular_items(bundle, n, excluded, categories, explain, rt.settings.snippet_chars)
    else:
        strategy = "personalized" if has_collab else "profile_only"
        history = np.concatenate([seen_items, np.asarray(recent_known, np.int64)])
        vector = user_vector(bundle, index, history, profiles.vectors if profiles else None)
        with stage("retrieval"):
            hits = await rt.index.search_items(
                bundle.manifest.items_collection, vector, n, sorted(excluded), categories
            )
        items = _response_items(hits, explain, rt.settings.snippet_chars)
    RECOMMENDATIONS.labels(strategy=strategy).inc()
    return RecommendationResponse(
        user_id=user_id,
        model_version=bundle.version,
        strategy=strategy,
        items=items,
        user_profiles=(profiles.texts if profiles else []) if explain else None,
    )


async def _split_known_items(
    rt: Runtime, bundle: LoadedBundle, item_ids: Sequence[str]
) -> tuple[list[int], list[str]]:
    """Catalogue indices of ``item_ids`` and the ids known only to the items collection (added through
    the API). Raises :class:`UnknownItemsError` for ids known to neither."""
    indices = [bundle.item_index[i] for i in item_ids if i in bundle.item_index]
    others = [i for i in dict.fromkeys(item_ids) if i not in bundle.item_index]
    added: list[str] = []
    if others:
        with stage("qdrant_items"):
            found = await rt.index.items_payload(bundle.manifest.items_collection, others)
        unknown = [i for i in others if i not in found]
        if unknown:
            raise UnknownItemsError(f"unknown item id(s): {', '.join(unknown[:20])}", unknown=unknown[:100])
        added = others
    return indices, added


async def recommend_cold_start(rt: Runtime, request: ColdStartRequest) -> RecommendationResponse:
    _check_n(rt, request.n)
    if len(request.text or "") > rt.settings.max_text_chars:
        raise BadRequestError(f"text is longer than {rt.settings.max_text_chars} characters")
    bundle = rt.holder.require()
    liked, _ = await _split_known_items(rt, bundle, request.liked_items)
    if request.text is not None and not bundle.manifest.proex:
        raise BadRequestError(
            "this model has no profile tower (trained without ProEx): send liked_items instead of text"
        )
    text_vectors = None
    if request.text is not None:
        with stage("text_encoder"):
            text_vectors = bundle.text_encoder.encode([request.text])
    excluded = set(request.exclude) | set(request.liked_items)
    strategy: Strategy
    if not liked and text_vectors is None:
        strategy = "popular"
        items = popular_items(
            bundle, request.n, excluded, request.categories, request.explain, rt.settings.snippet_chars
        )
    else:
        strategy = "personalized" if liked else "profile_only"
        vector = user_vector(bundle, None, liked, text_vectors, fold_in_items=liked)
        with stage("retrieval"):
            hits = await rt.index.search_items(
                bundle.manifest.items_collection, vector, request.n, sorted(excluded), request.categories
            )
        items = _response_items(hits, request.explain, rt.settings.snippet_chars)
    RECOMMENDATIONS.labels(strategy=strategy).inc()
    return RecommendationResponse(
        model_version=bundle.version,
        strategy=strategy,
        items=items,
        user_profiles=([request.text] if request.text else []) if request.explain else None,
    )


def item_text(title: str, categories: Sequence[str], text: str) -> str:
    """How an item added through the API is described to the text encoder."""
    head = f"{title} ({', '.join(categories)})" if categories else title
    return f"{head}: {text}"


def item_vector(bundle: LoadedBundle, item_id: str, profiles: np.ndarray | None) -> tuple[np.ndarray, str]:
    """An item's final vector from its profile vectors, and where it came from.

    A catalogue item of a LightGCN bundle: its collaborative vector plus its mapped profiles (the item
    tower); another catalogue item (Mult-VAE: a decoder column): its trained vector; an item known only by
    text: the item tower on a zero collaborative part (zero-shot)."""
    index = bundle.item_index.get(item_id)
    if index is not None and (bundle.collab_items is None or profiles is None):
        return np.asarray(bundle.item_vectors[index], np.float32), "model"
    prof, mask = profile_inputs(bundle, profiles)
    if index is not None:
        assert bundle.collab_items is not None
        collab = bundle.collab_items[index][None]
    else:
        collab = np.zeros((1, int(bundle.manifest.item_tower.inputs["collab"][1])), np.float32)
    with stage("item_tower"):
        vector = bundle.item_tower(collab=collab, profiles=prof, profile_mask=mask)[0]
    return vector, "model" if index is not None else "text"


async def upsert_item(rt: Runtime, item_id: str, request: ItemUpsertRequest) -> ItemUpsertResponse:
    """Add an item (embedded from its text, zero-shot) or update a catalogue item's metadata, then log
    it in the catalogue log so the refresh job writes its LLM profiles."""
    bundle = rt.holder.require()
    collection = bundle.manifest.items_collection
    version = bundle.manifest.profiles.store_version
    description = item_text(request.title, request.categories, request.text)
    with stage("qdrant_items"):
        existing = await rt.index.item_vectors(collection, [item_id])
    index = bundle.item_index.get(item_id)
    if index is not None:  # a catalogue item keeps its (trained or refreshed) vector; its metadata changes
        vector = existing.get(item_id, np.asarray(bundle.item_vectors[index], np.float32))
        popularity = int(bundle.items_meta[index].get("popularity", 0))
        source = "model"
    else:
        with stage("text_encoder"):
            text_vec = bundle.text_encoder.encode([description])
        vector, source = item_vector(bundle, item_id, text_vec)
        popularity = 0
        with stage("qdrant_profiles"):
            await rt.index.upsert_profile(
                bundle.manifest.profiles_collection,
                profile_point("item", item_id, text_vec, [description], version, "item_text"),
            )
        await rt.cache.invalidate(version, "item", [item_id])
    payload = item_payload(
        item_id,
        -1 if index is None else index,
        request.title,
        request.categories,
        popularity,
        profile_snippet=request.text[: rt.settings.snippet_chars],
        source=source,
    )
    with stage("qdrant_upsert"):
        await rt.index.upsert_item(collection, item_id, vector, payload)
    event = {
        "type": "item_upsert",
        "item_id": item_id,
        "title": request.title,
        "categories": request.categories,
        "text": request.text,
        "received_at": datetime.now(UTC).isoformat(),
    }
    await asyncio.to_thread(append_events, rt.settings.catalog_log, [event])
    ITEMS_UPSERTED.inc()
    return ItemUpsertResponse(
        item_id=item_id, created=item_id not in existing, vector_source=source, model_version=bundle.version
    )


async def record_feedback(rt: Runtime, events: Sequence[FeedbackEvent]) -> int:
    """Validate item ids, append the events durably to the feedback log, then note them as seen."""
    if not events:
        raise BadRequestError("send at least one feedback event")
    if len(events) > rt.settings.max_feedback_batch:
        raise BadRequestError(f"at most {rt.settings.max_feedback_batch} events per request")
    bundle = rt.holder.require()
    await _split_known_items(rt, bundle, [e.item_id for e in events])
    received = datetime.now(UTC).isoformat()
    rows = [
        {
            "user_id": e.user_id,
            "item_id": e.item_id,
            "type": e.type,
            "timestamp": (e.timestamp.isoformat() if e.timestamp else received),
            "value": e.value,
            "received_at": received,
        }
        for e in events
    ]
    with stage("feedback_append"):
        written = await asyncio.to_thread(append_events, rt.settings.feedback_log, rows)
    by_user: dict[str, list[str]] = {}
    for e in events:
        by_user.setdefault(e.user_id, []).append(e.item_id)
        FEEDBACK_EVENTS.labels(type=e.type).inc()
    await rt.cache.add_seen(by_user)
    return written


async def upsert_profiles(rt: Runtime, request: ProfilesUpsertRequest) -> ProfilesUpsertResponse:
    """Write refreshed profiles into the live profiles collection and drop their cache keys.

    The refresh job uses this when the service owns the embedded Qdrant storage (a server URL lets the
    job write directly)."""
    bundle = rt.holder.require()
    version = bundle.manifest.profiles.store_version
    if request.store_version != version:
        raise BadRequestError(f"store_version {request.store_version!r} is not the live one ({version!r})")
    dim = bundle.manifest.profiles.text_dim
    collection = bundle.manifest.profiles_collection
    for entry in request.profiles:
        if len(entry.vectors[0]) != dim:
            raise BadRequestError(
                f"{entry.entity_id}: vectors have dimension {len(entry.vectors[0])}, expected {dim}"
            )
    with stage("qdrant_upsert"):
        for entry in request.profiles:
            point = profile_point(
                request.entity_type,
                entry.entity_id,
                np.asarray(entry.vectors, np.float32),
                entry.texts,
                version,
                entry.strategy,
                entry.is_fallback,
            )
            await rt.index.upsert_profile(collection, point)
    invalidated = await rt.cache.invalidate(
        version, request.entity_type, [p.entity_id for p in request.profiles]
    )
    if request.entity_type == "item":  # the item side of the model depends on item profiles: re-encode
        payloads = await rt.index.items_payload(
            bundle.manifest.items_collection, [p.entity_id for p in request.profiles]
        )
        for entry in request.profiles:
            payload = payloads.get(entry.entity_id)
            if payload is None:
                continue  # not in the items collection: nothing to re-encode
            vector, _ = item_vector(bundle, entry.entity_id, np.asarray(entry.vectors, np.float32))
            payload = {
                **payload,
                "profile_snippet": entry.texts[0][: rt.settings.snippet_chars],
                "updated_at": now_iso(),
            }
            with stage("qdrant_upsert"):
                await rt.index.upsert_item(bundle.manifest.items_collection, entry.entity_id, vector, payload)
    return ProfilesUpsertResponse(upserted=len(request.profiles), invalidated=invalidated)
