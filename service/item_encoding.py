"""Items known by their text: embedded from their description and placed among the catalogue items
(:func:`encode_text_item`), and the content index kept in step with the item index (:func:`write_content`).
Used by the write path (:mod:`service.online_store`), the recommendations and the catalogue sync."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from rec_contract.content import item_text
from service.towers import item_vector

if TYPE_CHECKING:
    from service.runtime import Live


def describe_item(
    live: Live, title: str, categories: Sequence[str], text: str
) -> tuple[np.ndarray, np.ndarray]:
    """An item's full description embedded ``[1, d]`` (its text profile) and its content vector ``[d]``
    (rec_contract.content): the normalised sum of the embeddings of its title and categories (what the
    catalogue's content vectors hold) and of its full description (what only the text says)."""
    head, full = item_text(title, categories), item_text(title, categories, text)
    vectors = live.bundle.text_encoder.encode([full] if full == head else [full, head])
    content = vectors.sum(axis=0)
    return vectors[:1], (content / max(float(np.linalg.norm(content)), 1e-12)).astype(np.float32)


def encode_text_item(
    live: Live, item_id: str, title: str, categories: Sequence[str], text: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """An item known by its text: its description's embedding ``[1, d]``, its content vector, its
    vector (the weighted mean of its nearest catalogue items' vectors by content, or the item tower:
    see ``service.content``) and the vector's source."""
    text_vec, content = describe_item(live, title, categories, text)
    index = live.bundle.item_index.get(item_id)
    if index is None:
        near = live.content.neighbour_vector(content)
        if near is not None:
            return text_vec, content, near, "text"
    vector, source = item_vector(live.bundle, index, text_vec)
    return text_vec, content, vector, source


async def write_content(
    live: Live, item_id: str, content: np.ndarray | None, payload: dict[str, Any], text: str = ""
) -> None:
    """Keep the content index in step with the item index (``content`` None: embedded here from the
    payload's title and categories and ``text``)."""
    if live.content_index is None:
        return
    if content is None:
        title, categories = str(payload.get("title", item_id)), list(payload.get("categories", ()))
        _, content = await asyncio.to_thread(describe_item, live, title, categories, text)
    await live.content_index.upsert(item_id, np.asarray(content, np.float32).ravel(), payload)
