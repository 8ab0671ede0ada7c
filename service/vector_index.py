"""Qdrant access for the service: item retrieval, profile lookup, item upserts.

The same code runs against a Qdrant server (``PROFILEREC_QDRANT_URL``) or the embedded local mode on a
path. Any failure to reach Qdrant becomes :class:`DependencyUnavailableError` (503 with the reason).
The service queries the versioned collection named in its bundle's manifest, not the alias, so a
promotion that moves the alias and the bundle pointer can never pair a user tower with another
model's item vectors.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http.exceptions import ApiException

from rec_contract.naming import PROFILE_MULTIVECTOR, point_id
from rec_contract.qdrant_schema import ITEMS_PAYLOAD_INDEXES, item_points, items_vectors_config
from service.errors import DependencyUnavailableError
from service.metrics import DEPENDENCY_UP

log = logging.getLogger(__name__)

# What a dead or unreachable Qdrant raises: HTTP client errors, timeouts, refused connections; the
# embedded local mode raises ValueError for a missing collection.
QDRANT_ERRORS: tuple[type[BaseException], ...] = (ApiException, OSError, TimeoutError, ValueError)
try:  # httpx is what the REST client uses; its errors do not derive from OSError
    import httpx

    QDRANT_ERRORS = (*QDRANT_ERRORS, httpx.HTTPError)
except ImportError:  # pragma: no cover
    pass


@dataclass
class ScoredItem:
    item_id: str
    score: float
    payload: dict[str, Any]


class VectorIndex:
    def __init__(
        self, url: str | None, path: str, api_key: str | None, timeout_s: float, exact: bool = True
    ) -> None:
        self.location = url or f"local:{path}"
        self.exact = exact
        # The embedded local mode evaluates filters in Python point by point (~50 ms for 60 excluded ids
        # over 1.7k items) while its unfiltered search is one vectorised product: there, excluded items
        # are dropped from an over-fetched result instead. A server applies the filter natively.
        self.filter_exclusions = url is not None
        if url:
            self.client = AsyncQdrantClient(url=url, api_key=api_key, timeout=int(max(1, timeout_s)))
        else:
            self.client = AsyncQdrantClient(path=path)

    def _down(self, exc: BaseException, op: str) -> DependencyUnavailableError:
        DEPENDENCY_UP.labels(dependency="qdrant").set(0)
        return DependencyUnavailableError(
            f"qdrant at {self.location} is unavailable ({op}: {type(exc).__name__}: {exc})"
        )

    async def ping(self) -> str | None:
        try:
            await self.client.get_collections()
        except QDRANT_ERRORS as exc:
            return str(self._down(exc, "ping"))
        DEPENDENCY_UP.labels(dependency="qdrant").set(1)
        return None

    async def collection_exists(self, name: str) -> bool:
        try:
            return bool(await self.client.collection_exists(name))
        except QDRANT_ERRORS as exc:
            raise self._down(exc, "collection_exists") from exc

    async def ensure_items_collection(
        self,
        name: str,
        item_ids: Sequence[str],
        vectors: np.ndarray,
        meta: Sequence[dict[str, Any]],
    ) -> bool:
        """Create and fill the items collection of a bundle when it does not exist yet (the export job
        does this for a Qdrant server; in embedded mode the service owns the storage and does it)."""
        if await self.collection_exists(name):
            return False
        try:
            await self.client.create_collection(
                name, vectors_config=items_vectors_config(int(vectors.shape[1]))
            )
            for field_name, schema in ITEMS_PAYLOAD_INDEXES.items():
                await self.client.create_payload_index(name, field_name=field_name, field_schema=schema)
            for batch in item_points(item_ids, vectors, meta):
                await self.client.upsert(name, points=batch, wait=True)
        except QDRANT_ERRORS as exc:
            raise self._down(exc, "create items collection") from exc
        log.info("items collection created", extra={"collection": name, "points": len(item_ids)})
        return True

    async def search_items(
        self,
        collection: str,
        vector: np.ndarray,
        limit: int,
        exclude_item_ids: Sequence[str] = (),
        categories: Sequence[str] = (),
    ) -> list[ScoredItem]:
        """Top ``limit`` items by dot product, without ``exclude_item_ids``, optionally only in
        ``categories`` (any of them)."""
        must_not: list[Any] = []
        fetch = limit
        if exclude_item_ids and self.filter_exclusions:
            must_not.append(models.HasIdCondition(has_id=[point_id("item", i) for i in exclude_item_ids]))
        elif exclude_item_ids:
            fetch = limit + len(exclude_item_ids)
        must: list[Any] = []
        if categories:
            must.append(models.FieldCondition(key="categories", match=models.MatchAny(any=list(categories))))
        query_filter = (
            models.Filter(must=must or None, must_not=must_not or None) if (must or must_not) else None
        )
        try:
            result = await self.client.query_points(
                collection,
                query=np.asarray(vector, dtype=np.float32).tolist(),
                limit=fetch,
                query_filter=query_filter,
                with_payload=["item_id"] if fetch > limit else True,
                search_params=models.SearchParams(exact=True)
                if self.exact and self.filter_exclusions
                else None,
            )
        except QDRANT_ERRORS as exc:
            raise self._down(exc, "search items") from exc
        DEPENDENCY_UP.labels(dependency="qdrant").set(1)
        if fetch == limit:
            return [
                ScoredItem(
                    item_id=str((p.payload or {}).get("item_id", p.id)),
                    score=float(p.score),
                    payload=dict(p.payload or {}),
                )
                for p in result.points
            ]
        # Over-fetched (embedded mode): drop the excluded items, then read the full payloads of the rest.
        excluded = set(exclude_item_ids)
        kept = [(str((p.payload or {}).get("item_id", p.id)), float(p.score)) for p in result.points]
        kept = [(item_id, score) for item_id, score in kept if item_id not in excluded][:limit]
        payloads = await self.items_payload(collection, [item_id for item_id, _ in kept])
        return [ScoredItem(item_id=i, score=s, payload=payloads.get(i, {"item_id": i})) for i, s in kept]

    async def items_payload(self, collection: str, item_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Payloads of the given items that exist in the collection (absent ids are left out)."""
        if not item_ids:
            return {}
        try:
            records = await self.client.retrieve(
                collection, ids=[point_id("item", i) for i in item_ids], with_payload=True, with_vectors=False
            )
        except QDRANT_ERRORS as exc:
            raise self._down(exc, "retrieve items") from exc
        return {str(r.payload["item_id"]): dict(r.payload) for r in records if r.payload}

    async def item_vectors(self, collection: str, item_ids: Sequence[str]) -> dict[str, np.ndarray]:
        try:
            records = await self.client.retrieve(
                collection, ids=[point_id("item", i) for i in item_ids], with_payload=True, with_vectors=True
            )
        except QDRANT_ERRORS as exc:
            raise self._down(exc, "retrieve item vectors") from exc
        out: dict[str, np.ndarray] = {}
        for r in records:
            if r.payload and isinstance(r.vector, list):
                out[str(r.payload["item_id"])] = np.asarray(r.vector, dtype=np.float32)
        return out

    async def upsert_item(
        self, collection: str, item_id: str, vector: np.ndarray, payload: dict[str, Any]
    ) -> None:
        point = models.PointStruct(
            id=point_id("item", item_id), vector=np.asarray(vector, np.float32).tolist(), payload=payload
        )
        try:
            await self.client.upsert(collection, points=[point], wait=True)
        except QDRANT_ERRORS as exc:
            raise self._down(exc, "upsert item") from exc

    async def profile(
        self, collection: str, entity_type: str, raw_id: str
    ) -> tuple[np.ndarray, list[str]] | None:
        """The K profile vectors and texts of one entity, or None when it has no profile point."""
        try:
            records = await self.client.retrieve(
                collection,
                ids=[point_id(entity_type, raw_id)],
                with_payload=True,
                with_vectors=[PROFILE_MULTIVECTOR],
            )
        except QDRANT_ERRORS as exc:
            raise self._down(exc, "retrieve profile") from exc
        if not records:
            return None
        record = records[0]
        vectors = record.vector.get(PROFILE_MULTIVECTOR) if isinstance(record.vector, dict) else None
        if not vectors:
            return None
        texts = [str(t) for t in (record.payload or {}).get("texts", [])]
        return np.asarray(vectors, dtype=np.float32), texts

    async def upsert_profile(self, collection: str, point: models.PointStruct) -> None:
        try:
            if not await self.client.collection_exists(collection):
                raise DependencyUnavailableError(
                    f"profiles collection {collection} does not exist in qdrant at {self.location}"
                )
            await self.client.upsert(collection, points=[point], wait=True)
        except QDRANT_ERRORS as exc:
            raise self._down(exc, "upsert profile") from exc

    async def close(self) -> None:
        await self.client.close()
