"""Bring a newly opened bundle's item index in line with the catalogue log before it is served.

Items added, edited and deleted through the API are applied to the item index of the bundle that was
live at the time (its overlay log, ``items-<bundle version>.jsonl``) and logged in the catalogue log
(``PROFILEREC_CATALOG_LOG``), the durable record. A bundle's index knows nothing of what happened
while another bundle was live: a retrained bundle brought deleted items back (its training data keeps
every item), a rollback forgot the items added and deleted since the promotion, a roll-forward those
changed while rolled back (found by the issue-15 replay). :func:`reconcile_items` replays the final
state of every item in the catalogue log onto the index: deleted items are deleted, items missing are
added (embedded from their text, as ``PUT /v1/items`` does), edited metadata is applied. It runs when
a bundle is opened, before the switch, under a file lock so that the worker processes that open the
same bundle do it once (the others find nothing left to do).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

from rec_contract.content import item_text
from rec_contract.event_log import read_events
from rec_contract.paths import reconcile_lock_file
from rec_contract.qdrant_schema import item_payload
from service.item_encoding import encode_text_item, write_content

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def _file_lock(path: Path) -> AsyncIterator[None]:
    """An exclusive lock across processes, waited for in a thread (never blocking the event loop)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def final_states(catalog_log: Path) -> dict[str, dict[str, Any]]:
    """The last ``item_upsert`` or ``item_delete`` event of every item in the catalogue log."""
    last: dict[str, dict[str, Any]] = {}
    for event in read_events(catalog_log).events:
        if event.get("type") in ("item_upsert", "item_delete") and event.get("item_id") not in (None, ""):
            last[str(event["item_id"])] = event
    return last


async def reconcile_items(live: Any, catalog_log: Path, lock_dir: Path, snippet_chars: int) -> dict[str, int]:
    """Apply the catalogue log's final item states to ``live`` (a ``service.runtime.Live``)."""
    states = await asyncio.to_thread(final_states, catalog_log)
    done = {"deleted": 0, "added": 0, "edited": 0}
    if not states:
        return done
    bundle, items = live.bundle, live.items
    async with _file_lock(reconcile_lock_file(lock_dir, bundle.version)):
        items.sync()  # what another worker applied already
        known = await items.payloads(list(states))
        for item_id, event in states.items():
            payload = known.get(item_id)
            if event["type"] == "item_delete":
                if payload is not None and await items.delete(item_id):
                    done["deleted"] += 1
                continue
            title = str(event.get("title") or item_id)
            categories = [str(c) for c in event.get("categories") or []]
            text = str(event.get("text") or "")
            index = bundle.item_index.get(item_id)
            if payload is None:
                if index is not None:  # a catalogue item deleted in this index, added again since
                    vector = np.asarray(bundle.item_vectors[index], np.float32)
                    source, popularity = "model", int(bundle.items_meta[index].get("popularity", 0))
                else:
                    description = item_text(title, categories, text)
                    text_vec, _, vector, source = await asyncio.to_thread(
                        encode_text_item, live, item_id, title, categories, text
                    )
                    popularity = 0
                    if await live.profiles.get("item", item_id) is None:
                        await live.profiles.upsert("item", item_id, text_vec, [description], "item_text")
                new = item_payload(
                    item_id,
                    -1 if index is None else index,
                    title,
                    categories,
                    popularity,
                    profile_snippet=text[:snippet_chars],
                    source=source,
                )
                await items.upsert(item_id, vector, new)
                done["added"] += 1
            elif payload.get("title") != title or list(payload.get("categories", [])) != categories:
                vectors = await items.vectors([item_id])
                edited = {**payload, "title": title, "categories": categories}
                edited["profile_snippet"] = text[:snippet_chars] or payload.get("profile_snippet", "")
                await items.upsert(item_id, vectors[item_id], edited)
                done["edited"] += 1
        done["content"] = await _reconcile_content(live, states)
    if any(done.values()):
        log.info("item index reconciled with the catalogue log", extra={"bundle": bundle.version, **done})
    return done


async def _reconcile_content(live: Any, states: dict[str, dict[str, Any]]) -> int:
    """The content index follows the item index: what the catalogue log deleted is deleted, what it
    added or edited gets its content vector (embedded from its title, categories and text) and the item
    index's payload. Returns the number of changes."""
    content = live.content_index
    if content is None:
        return 0
    content.sync()
    present = await content.payloads(list(states))
    current = await live.items.payloads(list(states))
    changes = 0
    for item_id, event in states.items():
        payload, mine = current.get(item_id), present.get(item_id)
        if payload is None:
            if mine is not None and await content.delete(item_id):
                changes += 1
            continue
        if (
            mine is not None
            and mine.get("title") == payload.get("title")
            and list(mine.get("categories", [])) == list(payload.get("categories", []))
        ):
            continue
        text = str(event.get("text") or "") if live.bundle.item_index.get(item_id) is None else ""
        await write_content(live, item_id, None, payload, text)
        changes += 1
    return changes
