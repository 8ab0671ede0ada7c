"""Shapes of the Qdrant collections, shared by the export/upload jobs (sync client) and the service
(async client): collection configurations, payloads and point construction, with no I/O.

Items collection ``items_<bundle version>``: one point per item, vector = the final item vector of the
bundle (dot product = the model's score), payload::

    item_id (str), index (int, -1 for items added through the API), title (str),
    categories (list[str], keyword-indexed), popularity (int), profile_snippet (str),
    source ("model" | "text"), updated_at (ISO-8601)

Profiles collection ``profiles_<profile store version>``: one point per user/item, see
``rec_contract.naming`` for the vector names; payload: entity_type, entity_id, texts, k, strategy,
is_fallback (list of 0/1), version, updated_at, labels (one explanation label per text:
source, grounded, grounded_on; see ``rec_contract.explanations``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
from qdrant_client import models

from rec_contract.naming import PROFILE_MEAN_VECTOR, PROFILE_MULTIVECTOR, point_id


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def items_vectors_config(dim: int) -> models.VectorParams:
    return models.VectorParams(size=dim, distance=models.Distance.DOT)


ITEMS_PAYLOAD_INDEXES: dict[str, models.PayloadSchemaType] = {
    "categories": models.PayloadSchemaType.KEYWORD,
    "item_id": models.PayloadSchemaType.KEYWORD,
}


def profiles_vectors_config(dim: int) -> dict[str, models.VectorParams]:
    return {
        PROFILE_MULTIVECTOR: models.VectorParams(
            size=dim,
            distance=models.Distance.COSINE,
            multivector_config=models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM),
        ),
        PROFILE_MEAN_VECTOR: models.VectorParams(size=dim, distance=models.Distance.COSINE),
    }


def item_payload(
    item_id: str,
    index: int,
    title: str,
    categories: Sequence[str],
    popularity: int,
    profile_snippet: str = "",
    source: str = "model",
) -> dict[str, Any]:
    return {
        "item_id": str(item_id),
        "index": int(index),
        "title": title,
        "categories": list(categories),
        "popularity": int(popularity),
        "profile_snippet": profile_snippet,
        "source": source,
        "updated_at": now_iso(),
    }


def item_point(item_id: str, vector: np.ndarray, payload: dict[str, Any]) -> models.PointStruct:
    return models.PointStruct(
        id=point_id("item", item_id), vector=np.asarray(vector, dtype=np.float32).tolist(), payload=payload
    )


def item_points(
    item_ids: Sequence[str],
    vectors: np.ndarray,
    meta: Sequence[dict[str, Any]],
    batch_size: int = 512,
) -> Iterator[list[models.PointStruct]]:
    """Batches of item points for a whole catalogue
    (``meta[i]``: title, categories, popularity, profile_snippet)."""
    batch: list[models.PointStruct] = []
    for index, raw in enumerate(item_ids):
        info = meta[index]
        payload = item_payload(
            raw,
            index,
            str(info.get("title", raw)),
            info.get("categories", []),
            int(info.get("popularity", 0)),
            str(info.get("profile_snippet", "")),
        )
        batch.append(item_point(raw, vectors[index], payload))
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def profile_point(
    entity_type: str,
    entity_id: str,
    vectors: np.ndarray,
    texts: Sequence[str],
    version: str,
    strategy: str = "",
    is_fallback: Sequence[bool] | None = None,
    labels: Sequence[dict[str, Any] | None] | None = None,
) -> models.PointStruct:
    """One profile point; ``labels`` (``rec_contract.explanations``), one per text, say which texts
    may be shown as explanations (absent: derived from ``is_fallback`` when read)."""
    arr = np.asarray(vectors, dtype=np.float32)
    mean = arr.mean(axis=0)
    norm = float(np.linalg.norm(mean))
    if norm > 0:
        mean = mean / norm
    return models.PointStruct(
        id=point_id(entity_type, entity_id),
        vector={PROFILE_MULTIVECTOR: arr.tolist(), PROFILE_MEAN_VECTOR: mean.tolist()},
        payload={
            "entity_type": entity_type,
            "entity_id": str(entity_id),
            "texts": list(texts),
            "k": int(arr.shape[0]),
            "strategy": strategy,
            "is_fallback": [int(bool(f)) for f in (is_fallback or [False] * arr.shape[0])],
            "version": version,
            "updated_at": now_iso(),
            **({"labels": list(labels)} if labels is not None else {}),
        },
    )
