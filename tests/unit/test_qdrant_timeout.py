"""The Qdrant connection against a Qdrant server that hangs, refuses and comes back (the stand-in
server of the resilience benchmark, answering from qdrant-client's local mode)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from benchmarks.fake_qdrant import FakeQdrant
from service.errors import DependencyUnavailableError
from service.stores.base import Exclusions
from service.stores.qdrant import QdrantConnection, QdrantEngine


def _storage(tmp_path: Path) -> Path:
    path = tmp_path / "qdrant"
    client = QdrantClient(path=str(path))
    client.close()
    return path


def test_a_fractional_timeout_bounds_each_call_to_a_hanging_qdrant(tmp_path: Path) -> None:
    async def scenario(qdrant: FakeQdrant) -> tuple[str | None, float, str | None]:
        conn = QdrantConnection(qdrant.url, tmp_path / "unused", None, 0.3)
        try:
            qdrant.hang()
            started = time.monotonic()
            reason = await conn.ping()
            waited = time.monotonic() - started
            qdrant.come_back()
            return reason, waited, await conn.ping()
        finally:
            await conn.close()

    with FakeQdrant(_storage(tmp_path)) as qdrant:
        reason, waited, after = asyncio.run(scenario(qdrant))
    assert reason is not None and "ping" in reason
    assert waited < 0.9  # 0.3 s, not the whole second the client rounds a timeout up to
    assert after is None  # the same connection answers once Qdrant does


def test_items_are_served_again_once_a_refusing_qdrant_is_back(tmp_path: Path) -> None:
    vectors = np.eye(4, dtype=np.float32)
    meta = [{"title": f"item {i}", "categories": ["A"], "popularity": i} for i in range(4)]

    async def scenario(qdrant: FakeQdrant) -> tuple[list[str], str, list[str]]:
        conn = QdrantConnection(qdrant.url, tmp_path / "unused", None, 0.5)
        try:
            index = await QdrantEngine(conn).open("v1", "items_v1", ["a", "b", "c", "d"], vectors, meta)
            before = [h.item_id for h in await index.search(vectors[1], 2, Exclusions())]
            qdrant.go_down()
            with pytest.raises(DependencyUnavailableError) as down:
                await index.search(vectors[1], 2, Exclusions())
            qdrant.come_back()
            after = [h.item_id for h in await index.search(vectors[1], 2, Exclusions())]
            return before, down.value.message, after
        finally:
            await conn.close()

    with FakeQdrant(_storage(tmp_path)) as qdrant:
        before, message, after = asyncio.run(scenario(qdrant))
    assert before[0] == "b" and after == before
    assert "qdrant" in message and qdrant.url not in message  # the address goes to the log only


def test_the_stand_in_answers_qdrant_rest_from_the_local_storage(tmp_path: Path) -> None:
    """What the resilience parts rely on: points written through the stand-in are in the storage."""

    async def write(url: str) -> None:
        from qdrant_client import AsyncQdrantClient

        client = AsyncQdrantClient(url=url, timeout=5)
        try:
            await client.create_collection("c", vectors_config=models.VectorParams(size=2, distance="Dot"))
            await client.upsert("c", points=[models.PointStruct(id=7, vector=[1, 2], payload={"k": "v"})])
        finally:
            await client.close()

    storage = _storage(tmp_path)
    with FakeQdrant(storage) as qdrant:
        asyncio.run(write(qdrant.url))
    client = QdrantClient(path=str(storage))
    try:
        [record] = client.retrieve("c", ids=[7], with_vectors=True)
    finally:
        client.close()
    assert record.payload == {"k": "v"} and record.vector == [1.0, 2.0]


def test_an_items_collection_whose_filling_was_interrupted_is_filled_again(tmp_path: Path) -> None:
    vectors = np.eye(4, dtype=np.float32)
    meta = [{"title": f"item {i}", "categories": ["A"], "popularity": i} for i in range(4)]
    ids = ["a", "b", "c", "d"]

    async def scenario() -> tuple[int, int]:
        conn = QdrantConnection(None, tmp_path / "qdrant", None, 5.0)
        try:
            engine = QdrantEngine(conn)
            await engine.open("v1", "items_v1", ids[:2], vectors[:2], meta[:2])  # the interrupted filling
            partial = (await conn.client.count("items_v1", exact=True)).count
            await engine.open("v1", "items_v1", ids, vectors, meta)
            return partial, (await conn.client.count("items_v1", exact=True)).count
        finally:
            await conn.close()

    assert asyncio.run(scenario()) == (2, 4)


def test_the_calls_of_one_request_share_one_timeout(tmp_path: Path) -> None:
    """Three sequential calls to a slow (not hanging) Qdrant: without a request budget each gets the
    whole timeout; inside one (what the middleware opens per request) they share it."""
    from service.stores.qdrant import request_budget

    async def three_slow_calls(conn: QdrantConnection) -> tuple[int, float]:
        done, started = 0, time.monotonic()
        try:
            for i in range(3):
                await conn.call(f"call {i}", asyncio.sleep(0.25))
                done += 1
        except DependencyUnavailableError:
            pass
        return done, time.monotonic() - started

    async def scenario() -> tuple[tuple[int, float], tuple[int, float], str]:
        conn = QdrantConnection("http://127.0.0.1:9", tmp_path / "unused", None, 0.5)  # never dialled
        try:
            alone = await three_slow_calls(conn)
            with request_budget():
                shared = await three_slow_calls(conn)
                with pytest.raises(DependencyUnavailableError) as spent:
                    await conn.call("after", asyncio.sleep(0))  # nothing left: refused at once
            return alone, shared, spent.value.reason
        finally:
            await conn.close()

    alone, shared, reason = asyncio.run(scenario())
    assert alone[0] == 3  # 0.25 s each is within a 0.5 s timeout per call
    assert shared[0] == 1 and shared[1] < 0.5  # the second call ran out of the request's 0.45 s
    assert "spent" in reason
