"""The service's logic as plain async functions over a :class:`Runtime` (routes only call these).

Known user (ProEx Algorithm 2 at request time): the fused user vector comes from the Redis cache (one
round trip), else from the user tower applied to the user's K profile vectors (mean-pooled inside the
tower) and collaborative part (LightGCN: the trained user vector; Mult-VAE: the encoder applied to the
user's history); then :class:`service.pipeline.Pipeline` retrieves, filters, scores and orders. Every
item the user interacted with, in the data the bundle was built from or in feedback accepted since
(the feedback log, followed), is excluded.

Cold start: a user with neither collaborative signal nor profiles gets the most popular items; a request
with liked items and/or text builds the user vector from those (liked catalogue items: fold-in of their
collaborative vectors or the history input; liked items added through the API and the text: profile
vectors through the tower's profile mapping); a request with text also matches the items' own text
(a blend, ``service.content``). Items known only by text are embedded from their text and placed
among their nearest catalogue items by content (or through the item tower). ONNX runs in a worker
thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from rec_contract.event_log import append_events
from service.errors import BadRequestError, InvalidInputError, UnknownItemsError
from service.metrics import FEEDBACK_EVENTS, RECOMMENDATIONS, stage
from service.pipeline import Query
from service.runtime import Live, Runtime
from service.schemas import (
    ColdStartRequest,
    FeedbackEvent,
    Strategy,
)
from service.stores.base import EMPTY_INDICES, Exclusions
from service.towers import user_feeds

STRATEGY_COUNTERS = {
    s: RECOMMENDATIONS.labels(strategy=s) for s in ("personalized", "profile_only", "popular")
}


def _check_n(rt: Runtime, n: int, field: str) -> None:
    if n > rt.settings.max_n:
        raise InvalidInputError(
            field, f"n={n} is above the limit of {rt.settings.max_n}", limit=rt.settings.max_n
        )


def _answer(
    live: Live,
    strategy: Strategy,
    items: list[dict[str, Any]],
    user_id: str | None,
    profiles: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    """The response body; ``profiles``: the explanations (``{text, source, grounded_on}``, only
    profiles that may be shown; None without explain)."""
    STRATEGY_COUNTERS[strategy].inc()
    return {
        "user_id": user_id,
        "model_version": live.version,
        "strategy": strategy,
        "items": items,
        "user_profiles": [p["text"] for p in profiles] if profiles is not None else None,
        "explanations": profiles,
    }


async def popular_items(
    rt: Runtime, live: Live, n: int, exclude: Exclusions, categories: Sequence[str], explain: bool
) -> list[dict[str, Any]]:
    """The most popular catalogue items, with the same exclusions and filters as a personalised answer
    (and the item index's current metadata: edits and deletions through the API apply)."""
    bundle = live.bundle
    blocked = np.zeros(bundle.n_items, dtype=bool)
    blocked[exclude.indices] = True
    wanted = set(categories)
    pipeline = rt.pipeline
    out: list[dict[str, Any]] = []
    order = bundle.popular_order
    start = 0
    while len(out) < n and start < len(order):
        batch = [int(i) for i in order[start : start + 4 * n] if not blocked[i]]
        start += 4 * n
        ids = [bundle.item_ids[i] for i in batch if bundle.item_ids[i] not in exclude.ids]
        payloads = await live.items.payloads(ids)
        for item_id in ids:
            payload = payloads.get(item_id)
            if payload is None or (wanted and not wanted.intersection(payload.get("categories", ()))):
                continue
            score = float(payload.get("popularity", 0))
            out.append(pipeline.row(item_id, score, payload, explain))
            if len(out) >= n:
                break
    return out


def _exclusions(
    live: Live, seen: np.ndarray, feedback_ids: set[str], request_ids: Sequence[str]
) -> tuple[Exclusions, list[int]]:
    """What an answer leaves out, and the feedback items that are catalogue items (their indices)."""
    index = live.bundle.item_index
    known = [index[i] for i in feedback_ids if i in index]
    indices = np.concatenate([seen, np.asarray(known, np.int64)]) if known else seen
    ids = frozenset(request_ids) | frozenset(feedback_ids) if request_ids else frozenset(feedback_ids)
    return Exclusions(indices=indices, ids=ids), known


async def _cached_user_vector(
    rt: Runtime, live: Live, user_id: str, local_tag: str
) -> tuple[np.ndarray | None, str | None]:
    """The user's cached vector (this worker's memory, else Redis) and the Redis generation token."""
    key = (live.version, user_id)
    local = live.profiles.local_revisions
    found: np.ndarray | None = rt.local_cache.get(key, local_tag) if local else None
    if found is not None:
        return found, None
    vector, token = await rt.cache.get_user_vector(live.version, user_id, local_tag)
    if vector is not None and local:
        rt.local_cache.put(key, local_tag, vector)
    return vector, token


async def recommend_for_user(
    rt: Runtime, user_id: str, n: int, categories: Sequence[str], exclude: Sequence[str], explain: bool
) -> dict[str, Any]:
    _check_n(rt, n, "query.n")
    live = rt.holder.require()
    rt.categories.check(live.bundle.categories, categories, "query.category")
    with stage("sync"):
        live.sync()
        rt.feedback.sync()
    bundle = live.bundle
    user = bundle.user_index.get(user_id)
    feedback = rt.feedback.items_of(user_id)
    seen = bundle.seen.items_of(user) if user is not None else EMPTY_INDICES
    excluded, liked = _exclusions(live, seen, feedback, exclude)
    has_collab = user is not None or bool(liked)

    local_tag = f"{len(feedback)}|{live.profiles.revision('user', user_id)}"
    local = live.profiles.local_revisions
    with stage("cache"):
        vector, token = await _cached_user_vector(rt, live, user_id, local_tag)
    profiles = None
    if vector is None or explain:
        with stage("profiles"):
            profiles = await live.profiles.get("user", user_id, texts=explain)
    texts = (profiles.explanations() if profiles else []) if explain else None
    if vector is None and not has_collab and profiles is None:
        items = await popular_items(rt, live, n, excluded, categories, explain)
        return _answer(live, "popular", items, user_id, texts)
    if vector is None:
        with stage("user_tower"):
            feeds = user_feeds(bundle, user, liked, profiles.vectors if profiles else None)
            vector = (await live.user_tower(feeds))[0]
        await rt.cache.put_user_vector(live.version, user_id, token, local_tag, vector)
        if local:
            rt.local_cache.put((live.version, user_id), local_tag, vector)
    query = Query(vector, n, excluded, categories, explain)
    # the same request again (no filter of its own) can reuse the user's candidates while nothing
    # they depend on changed: the vector (feedback, profiles) and the items (the index's revision)
    reuse = local and not categories and not exclude
    key = (live.version, user_id) if reuse else None
    items = await rt.pipeline.run(live.items, query, key, local_tag)
    return _answer(live, "personalized" if has_collab else "profile_only", items, user_id, texts)


async def _split_known_items(live: Live, item_ids: Sequence[str]) -> tuple[list[int], list[str]]:
    """Catalogue indices of ``item_ids`` and the ids known only to the item index (added through the
    API). Raises :class:`UnknownItemsError` for ids known to neither (or deleted)."""
    index = live.bundle.item_index
    unique = list(dict.fromkeys(item_ids))
    with stage("items_lookup"):
        found = await live.items.payloads(unique)
    unknown = [i for i in unique if i not in found]
    if unknown:
        raise UnknownItemsError(f"unknown item id(s): {', '.join(unknown[:20])}", unknown=unknown[:100])
    return [index[i] for i in unique if i in index], [i for i in unique if i not in index]


async def recommend_cold_start(rt: Runtime, request: ColdStartRequest) -> dict[str, Any]:
    _check_n(rt, request.n, "body.n")
    if len(request.text or "") > rt.settings.max_text_chars:
        raise InvalidInputError("body.text", f"text is longer than {rt.settings.max_text_chars} characters")
    live = rt.holder.require()
    rt.categories.check(live.bundle.categories, request.categories, "body.categories")
    live.sync()
    bundle = live.bundle
    liked, added = await _split_known_items(live, request.liked_items)
    if request.text is not None and not bundle.manifest.proex:
        raise BadRequestError(
            "this model has no profile tower (trained without ProEx): send liked_items instead of text"
        )
    profile_rows: list[np.ndarray] = []
    text_vector: np.ndarray | None = None
    if request.text is not None:
        with stage("text_encoder"):
            profile_rows.append(await live.encode_text(request.text))
        text_vector = profile_rows[-1][0]
    if bundle.manifest.proex:
        for item_id in added:  # items known only by text: their text profiles stand in for them
            found = await live.profiles.get("item", item_id)
            if found is not None:
                profile_rows.append(found.vectors.mean(axis=0, keepdims=True))
    profiles = np.concatenate(profile_rows) if profile_rows else None
    excluded = Exclusions(
        indices=np.asarray(liked, np.int64), ids=frozenset(request.exclude) | frozenset(request.liked_items)
    )
    texts = (
        ([{"text": request.text, "source": "request", "grounded_on": []}] if request.text else [])
        if request.explain
        else None
    )
    if not liked and profiles is None:
        items = await popular_items(rt, live, request.n, excluded, request.categories, request.explain)
        return _answer(live, "popular", items, None, texts)
    with stage("user_tower"):
        vector = (await live.user_tower(user_feeds(bundle, None, liked, profiles)))[0]
    query = Query(vector, request.n, excluded, request.categories, request.explain)
    if text_vector is not None and live.content_index is not None and live.content.blends_text:
        items = await rt.pipeline.run_blended(
            live.items, live.content_index, live.content, query, text_vector
        )
    else:
        items = await rt.pipeline.run(live.items, query)
    return _answer(live, "personalized" if liked else "profile_only", items, None, texts)


async def record_feedback(rt: Runtime, events: Sequence[FeedbackEvent]) -> int:
    """Validate item ids, append the events durably to the feedback log (the source of truth of what
    users have seen), then index them so the next answer of this process excludes them (other
    processes follow the log before their next answer)."""
    settings = rt.settings
    if not events or len(events) > settings.max_feedback_batch:
        raise InvalidInputError("body", f"send 1 to {settings.max_feedback_batch} events per request")
    for position, e in enumerate(events):
        if e.type not in settings.feedback_types:
            raise InvalidInputError(
                f"body.{position}.type",
                f"unknown feedback type {e.type!r} (PROFILEREC_FEEDBACK_TYPES)",
                valid=sorted(settings.feedback_types),
            )
    live = rt.holder.require()
    live.sync()
    await _split_known_items(live, [e.item_id for e in events])
    _check_per_user_cap(rt, events)
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
    rt.feedback.sync()
    for e in events:
        FEEDBACK_EVENTS.labels(type=e.type).inc()
    return written


def _check_per_user_cap(rt: Runtime, events: Sequence[FeedbackEvent]) -> None:
    """Each user's feedback items are excluded from every answer of theirs (and sent with each search
    to the item index), so their number is bounded: a batch that would take a user past
    ``max_feedback_items_per_user`` distinct items is refused whole (nothing acknowledged is dropped)."""
    cap = rt.settings.max_feedback_items_per_user
    rt.feedback.sync()
    batch: dict[str, set[str]] = {}
    for e in events:
        batch.setdefault(e.user_id, set()).add(e.item_id)
    for user, items in batch.items():
        known = rt.feedback.items_of(user)
        if len(known) + len(items - known) > cap:
            raise InvalidInputError(
                "body", f"user {user!r} would have feedback on more than {cap} items", limit=cap
            )
