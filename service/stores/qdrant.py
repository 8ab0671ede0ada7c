"""Qdrant as the retrieval store and the profile source: a server (``PROFILEREC_QDRANT_URL``, the
production path, filters native), or qdrant-client's local mode on a path (one process only: it locks
its folder; a stand-in for the server in tests).

Any failure to reach Qdrant becomes :class:`DependencyUnavailableError` (503 with the reason). The
service queries the versioned collection named in its bundle's manifest, not the alias, so a promotion
that moves the alias and the bundle pointer can never pair a user tower with another model's items.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import time
from collections.abc import Awaitable, Iterator, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http.exceptions import ApiException

from rec_contract.naming import PROFILE_MULTIVECTOR, point_id
from rec_contract.qdrant_schema import (
    ITEMS_PAYLOAD_INDEXES,
    item_point,
    item_points,
    items_vectors_config,
)
from service.errors import DependencyUnavailableError
from service.metrics import DEPENDENCY_UP
from service.stores.base import Exclusions, ItemEngine, ItemHit, ItemIndex

log = logging.getLogger(__name__)
T = TypeVar("T")

# What a dead or unreachable Qdrant raises: HTTP client errors, timeouts, refused connections; the
# local mode raises ValueError for a missing collection.
QDRANT_ERRORS: tuple[type[BaseException], ...] = (ApiException, OSError, TimeoutError, ValueError)
try:  # httpx is what the REST client uses; its errors do not derive from OSError
    import httpx

    QDRANT_ERRORS = (*QDRANT_ERRORS, httpx.HTTPError)
except ImportError:  # pragma: no cover
    pass


class RequestBudget:
    """When the Qdrant calls of one request must be done (set by the first of them)."""

    __slots__ = ("deadline",)

    def __init__(self) -> None:
        self.deadline: float | None = None


# The current request's budget: the service's middleware opens one per HTTP request, and every Qdrant
# call the request makes (sequential or in tasks it starts) shares it, so a slow Qdrant keeps a request
# waiting ``timeout_s`` in all, not ``timeout_s`` per call. Background work (catalogue sync, bundle
# reload) has none: each of its calls gets ``timeout_s`` of its own.
_REQUEST_BUDGET: ContextVar[RequestBudget | None] = ContextVar("qdrant_request_budget", default=None)


@contextlib.contextmanager
def request_budget() -> Iterator[RequestBudget]:
    """Share one Qdrant time budget between the calls made inside (one HTTP request)."""
    budget = RequestBudget()
    token = _REQUEST_BUDGET.set(budget)
    try:
        yield budget
    finally:
        _REQUEST_BUDGET.reset(token)


class QdrantConnection:
    """One async client, shared by the items index and the profile source."""

    def __init__(
        self, url: str | None, path: Path, api_key: str | None, timeout_s: float, exact: bool = True
    ) -> None:
        self.location = url or f"local:{path}"
        self.exact = exact
        self.server = url is not None
        self.timeout_s = timeout_s
        # a call gives up a little before timeout_s, so the 503 that follows is still answered within it
        self.call_timeout_s = timeout_s - min(0.1, timeout_s / 10)
        if url:
            # the client takes whole seconds (it rounds up); call() bounds each call by timeout_s itself
            self.client = AsyncQdrantClient(url=url, api_key=api_key, timeout=max(1, math.ceil(timeout_s)))
        else:
            Path(path).mkdir(parents=True, exist_ok=True)
            self.client = AsyncQdrantClient(path=str(path))

    def down(self, exc: BaseException, op: str) -> DependencyUnavailableError:
        DEPENDENCY_UP.labels(dependency="qdrant").set(0)
        return DependencyUnavailableError(
            "the item store (qdrant)", f"qdrant at {self.location}: {op}: {type(exc).__name__}: {exc}"
        )

    def _time_left(self) -> float:
        """Seconds this call may take: ``call_timeout_s``, or what is left of the request's budget."""
        budget = _REQUEST_BUDGET.get()
        if budget is None:
            return self.call_timeout_s
        now = time.monotonic()
        if budget.deadline is None:
            budget.deadline = now + self.call_timeout_s
        return budget.deadline - now

    async def call(self, op: str, awaitable: Awaitable[T]) -> T:
        """One Qdrant call on a server, given up after ``timeout_s`` less a reserve for answering (a
        tenth, at most 0.1 s; a fractional timeout too: the client itself rounds it up to whole
        seconds), counted from the request's first Qdrant call when inside :func:`request_budget`;
        a failure is :class:`DependencyUnavailableError`."""
        try:
            if not self.server:  # local mode: in-process, nothing to wait for
                result = await awaitable
            else:
                left = self._time_left()
                if left <= 0:
                    if inspect.iscoroutine(awaitable):
                        awaitable.close()  # never started: no "was never awaited" warning
                    raise TimeoutError(f"the request's {self.timeout_s:g} s for qdrant calls are spent")
                async with asyncio.timeout(left):
                    result = await awaitable
        except QDRANT_ERRORS as exc:
            raise self.down(exc, op) from exc
        DEPENDENCY_UP.labels(dependency="qdrant").set(1)
        return result

    async def ping(self) -> str | None:
        try:
            await self.call("ping", self.client.get_collections())
        except DependencyUnavailableError as exc:
            return exc.reason
        return None

    async def close(self) -> None:
        await self.client.close()


class QdrantItemIndex(ItemIndex):
    engine = "qdrant"

    def __init__(self, conn: QdrantConnection, collection: str, item_ids: Sequence[str]) -> None:
        self.conn = conn
        self.collection = collection
        self.item_ids = item_ids

    async def search(
        self, vector: np.ndarray, n: int, exclude: Exclusions, categories: Sequence[str] = ()
    ) -> list[ItemHit]:
        excluded = {self.item_ids[i] for i in exclude.indices.tolist()} | set(exclude.ids)
        must_not: list[Any] = []
        if excluded:
            must_not.append(models.HasIdCondition(has_id=[point_id("item", i) for i in excluded]))
        must: list[Any] = []
        if categories:
            must.append(models.FieldCondition(key="categories", match=models.MatchAny(any=list(categories))))
        query_filter = (
            models.Filter(must=must or None, must_not=must_not or None) if must or must_not else None
        )
        result = await self.conn.call(
            "search items",
            self.conn.client.query_points(
                self.collection,
                query=np.asarray(vector, dtype=np.float32).reshape(-1).tolist(),
                limit=n,
                query_filter=query_filter,
                with_payload=True,
                search_params=models.SearchParams(exact=True) if self.conn.exact else None,
            ),
        )
        return [
            ItemHit(str((p.payload or {}).get("item_id", p.id)), float(p.score), dict(p.payload or {}))
            for p in result.points
        ]

    async def _retrieve(self, item_ids: Sequence[str], with_vectors: bool) -> list[Any]:
        if not item_ids:
            return []
        records = await self.conn.call(
            "retrieve items",
            self.conn.client.retrieve(
                self.collection,
                ids=[point_id("item", i) for i in item_ids],
                with_payload=True,
                with_vectors=with_vectors,
            ),
        )
        return list(records)

    async def payloads(self, item_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        records = await self._retrieve(item_ids, False)
        return {str(r.payload["item_id"]): dict(r.payload) for r in records if r.payload}

    async def vectors(self, item_ids: Sequence[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for r in await self._retrieve(item_ids, True):
            if r.payload and isinstance(r.vector, list):
                out[str(r.payload["item_id"])] = np.asarray(r.vector, dtype=np.float32)
        return out

    async def upsert(self, item_id: str, vector: np.ndarray, payload: dict[str, Any]) -> None:
        await self.conn.call(
            "upsert item",
            self.conn.client.upsert(
                self.collection, points=[item_point(item_id, vector, payload)], wait=True
            ),
        )

    async def delete(self, item_id: str) -> bool:
        existed = bool(await self._retrieve([item_id], False))
        if existed:
            await self.conn.call(
                "delete item",
                self.conn.client.delete(
                    self.collection,
                    points_selector=models.PointIdsList(points=[point_id("item", item_id)]),
                    wait=True,
                ),
            )
        return existed


class QdrantEngine(ItemEngine):
    name = "qdrant"

    def __init__(self, conn: QdrantConnection) -> None:
        self.conn = conn

    async def open(
        self,
        version: str,
        collection: str,
        item_ids: Sequence[str],
        vectors: np.ndarray,
        meta: Sequence[dict[str, Any]],
    ) -> ItemIndex:
        """The bundle's items collection, created and filled first when it does not exist (the
        export job creates it on a server; a fresh local path gets it here). A collection whose filling
        was interrupted (a timeout, a crash: its last point is missing) is filled again; the catalogue
        log is applied over it afterwards (:func:`service.catalogue_sync.reconcile_items`)."""
        client, op = self.conn.client, "open items collection"
        exists = await self.conn.call(op, client.collection_exists(collection))
        if not exists:
            await self.conn.call(
                op,
                client.create_collection(
                    collection, vectors_config=items_vectors_config(int(vectors.shape[1]))
                ),
            )
            for field_name, schema in ITEMS_PAYLOAD_INDEXES.items():
                await self.conn.call(
                    op, client.create_payload_index(collection, field_name=field_name, field_schema=schema)
                )
        elif item_ids:
            last = [point_id("item", item_ids[-1])]
            exists = bool(await self.conn.call(op, client.retrieve(collection, ids=last, with_payload=False)))
            if not exists:
                log.warning("items collection incomplete: filling it again", extra={"collection": collection})
        if not exists:
            for batch in item_points(item_ids, vectors, meta):  # in order: the last point is written last
                await self.conn.call(op, client.upsert(collection, points=batch, wait=True))
            log.info("items collection filled", extra={"collection": collection, "points": len(item_ids)})
        return QdrantItemIndex(self.conn, collection, list(item_ids))

    async def ping(self) -> str | None:
        return await self.conn.ping()

    async def close(self) -> None:
        await self.conn.close()


async def qdrant_profile(
    conn: QdrantConnection, collection: str, entity_type: str, raw_id: str
) -> tuple[np.ndarray, list[str], dict[str, Any]] | None:
    """The K profile vectors, texts and payload of one entity, or None when it has no profile point."""
    records = await conn.call(
        "retrieve profile",
        conn.client.retrieve(
            collection,
            ids=[point_id(entity_type, raw_id)],
            with_payload=True,
            with_vectors=[PROFILE_MULTIVECTOR],
        ),
    )
    if not records:
        return None
    record = records[0]
    vectors = record.vector.get(PROFILE_MULTIVECTOR) if isinstance(record.vector, dict) else None
    if not vectors:
        return None
    payload = dict(record.payload or {})
    texts = [str(t) for t in payload.get("texts", [])]
    return np.asarray(vectors, dtype=np.float32), texts, payload


async def qdrant_upsert_profile(conn: QdrantConnection, collection: str, point: models.PointStruct) -> None:
    if not await conn.call("upsert profile", conn.client.collection_exists(collection)):
        raise DependencyUnavailableError(
            "the profile store (qdrant)",
            f"profiles collection {collection} does not exist in qdrant at {conn.location}",
        )
    await conn.call("upsert profile", conn.client.upsert(collection, points=[point], wait=True))
