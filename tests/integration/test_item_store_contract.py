"""One contract, every retrieval store: exact top-N, exclusions, category filters (any of several),
items added, updated and deleted, and writes seen by a second process's index.

Runs against the in-process engines (exact, qdrant-edge) and Qdrant through qdrant-client (its local
mode standing in for a server: the same client code and filters)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from service.stores.base import Exclusions, ItemEngine, ItemIndex
from service.stores.local import LocalEngine
from service.stores.qdrant import QdrantConnection, QdrantEngine

pytestmark = pytest.mark.integration

N_ITEMS, DIM = 600, 16
GENRES = ["Action", "Comedy", "Drama", "Horror", "Sci-Fi"]


@pytest.fixture(scope="module")
def catalogue() -> tuple[list[str], np.ndarray, list[dict]]:
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((N_ITEMS, DIM)).astype(np.float32)
    ids = [f"i{i}" for i in range(N_ITEMS)]
    meta = [
        {
            "title": f"Item {i}",
            "categories": sorted({GENRES[i % 5], GENRES[(i * 7) % 5]}),
            "popularity": N_ITEMS - i,
            "profile_snippet": "",
        }
        for i in range(N_ITEMS)
    ]
    return ids, vectors, meta


def _engine(kind: str, folder: Path) -> ItemEngine:
    if kind == "qdrant":
        return QdrantEngine(QdrantConnection(None, folder / "qdrant", None, 5.0, exact=True))
    return LocalEngine(folder / "online", kind)


ENGINES = ["exact", "edge", "qdrant"]


@pytest.fixture(params=ENGINES)
def store(request, catalogue, tmp_path) -> Iterator[tuple[str, ItemEngine, ItemIndex]]:
    if request.param == "edge":
        pytest.importorskip("service.stores.edge")
    ids, vectors, meta = catalogue
    engine = _engine(request.param, tmp_path)
    index = asyncio.run(engine.open("v1", "items_v1", ids, vectors, meta))
    yield request.param, engine, index
    asyncio.run(engine.close())


def _exact(vectors: np.ndarray, query: np.ndarray, n: int, blocked: set[int], allowed=None) -> list[int]:
    scores = vectors @ query
    order = [int(i) for i in np.argsort(-scores, kind="stable") if int(i) not in blocked]
    if allowed is not None:
        order = [i for i in order if i in allowed]
    return order[:n]


def _ids(hits) -> list[str]:
    return [h.item_id for h in hits]


def test_top_n_equals_exact_top_n(store, catalogue) -> None:
    _, _, index = store
    ids, vectors, _ = catalogue
    rng = np.random.default_rng(1)
    for _ in range(10):
        query = rng.standard_normal(DIM).astype(np.float32)
        hits = asyncio.run(index.search(query, 20, Exclusions()))
        assert _ids(hits) == [ids[i] for i in _exact(vectors, query, 20, set())]
        np.testing.assert_allclose(
            [h.score for h in hits], vectors[[int(h.item_id[1:]) for h in hits]] @ query, rtol=1e-4, atol=1e-4
        )
        assert hits[0].payload["title"].startswith("Item ")


def test_exclusions_by_index_and_by_id(store, catalogue) -> None:
    _, _, index = store
    ids, vectors, _ = catalogue
    query = np.random.default_rng(2).standard_normal(DIM).astype(np.float32)
    top = _exact(vectors, query, 30, set())
    by_index, by_id = top[:10], top[10:15]
    exclude = Exclusions(indices=np.asarray(by_index, np.int64), ids=frozenset(ids[i] for i in by_id))
    hits = asyncio.run(index.search(query, 20, exclude))
    assert _ids(hits) == [ids[i] for i in _exact(vectors, query, 20, set(by_index) | set(by_id))]


def test_category_filter_is_any_of(store, catalogue) -> None:
    _, _, index = store
    ids, vectors, meta = catalogue
    query = np.random.default_rng(3).standard_normal(DIM).astype(np.float32)
    wanted = {"Horror", "Sci-Fi"}
    allowed = {i for i, m in enumerate(meta) if wanted & set(m["categories"])}
    hits = asyncio.run(
        index.search(query, 15, Exclusions(indices=np.asarray([min(allowed)])), ["Horror", "Sci-Fi"])
    )
    assert _ids(hits) == [ids[i] for i in _exact(vectors, query, 15, {min(allowed)}, allowed)]
    assert not asyncio.run(index.search(query, 5, Exclusions(), ["NoSuchGenre"]))


def test_added_updated_and_deleted_items(store, catalogue) -> None:
    _, _, index = store
    ids, vectors, meta = catalogue
    query = np.random.default_rng(4).standard_normal(DIM).astype(np.float32)
    payload = {"item_id": "new-1", "index": -1, "title": "New", "categories": ["Horror"], "popularity": 0}
    asyncio.run(index.upsert("new-1", query * 10, payload))  # the best item there is for this query
    hits = asyncio.run(index.search(query, 5, Exclusions()))
    assert hits[0].item_id == "new-1" and hits[0].payload["title"] == "New"
    assert asyncio.run(index.search(query, 5, Exclusions(), ["Horror"]))[0].item_id == "new-1"
    assert asyncio.run(index.search(query, 5, Exclusions(ids=frozenset({"new-1"}))))[0].item_id != "new-1"
    assert asyncio.run(index.payloads(["new-1", "nope"])).keys() == {"new-1"}
    np.testing.assert_allclose(asyncio.run(index.vectors(["new-1"]))["new-1"], query * 10, rtol=1e-5)

    # a catalogue item's metadata edited: its vector stays, the payload changes everywhere
    best = _exact(vectors, query, 1, set())[0]
    edited = {**meta[best], "item_id": ids[best], "index": best, "title": "Edited", "categories": ["Comedy"]}
    asyncio.run(index.upsert(ids[best], vectors[best], edited))
    hits = asyncio.run(index.search(query, 5, Exclusions(ids=frozenset({"new-1"}))))
    assert hits[0].item_id == ids[best] and hits[0].payload["title"] == "Edited"
    assert ids[best] not in _ids(
        asyncio.run(index.search(query, 50, Exclusions(), ["Horror", "Sci-Fi", "Drama", "Action"]))
    )
    # exclusions by index still apply to an edited catalogue item
    assert ids[best] not in _ids(asyncio.run(index.search(query, 5, Exclusions(indices=np.asarray([best])))))

    assert asyncio.run(index.delete("new-1")) is True
    assert asyncio.run(index.delete(ids[best])) is True
    assert asyncio.run(index.delete("never-there")) is False
    hits = asyncio.run(index.search(query, 20, Exclusions()))
    assert "new-1" not in _ids(hits) and ids[best] not in _ids(hits)
    assert asyncio.run(index.payloads(["new-1", ids[best]])) == {}


def test_a_second_process_sees_the_writes(store, catalogue, tmp_path) -> None:
    """Another worker's index over the same storage: writes reach it on its next search."""
    kind, _, index = store
    if kind == "qdrant":
        pytest.skip("one server shared by every worker (qdrant-client's local mode is single-process)")
    ids, vectors, meta = catalogue
    other = asyncio.run(_engine(kind, tmp_path).open("v1", "items_v1", ids, vectors, meta))
    query = np.random.default_rng(5).standard_normal(DIM).astype(np.float32)
    payload = {"item_id": "new-2", "title": "New 2", "categories": ["Drama"], "popularity": 0}
    asyncio.run(index.upsert("new-2", query * 10, payload))
    other.sync()
    assert asyncio.run(other.search(query, 3, Exclusions()))[0].item_id == "new-2"
    asyncio.run(index.delete("new-2"))
    other.sync()
    assert "new-2" not in _ids(asyncio.run(other.search(query, 3, Exclusions())))
    # and a restarted process rebuilds the same state from the log
    fresh = asyncio.run(_engine(kind, tmp_path).open("v1", "items_v1", ids, vectors, meta))
    assert "new-2" not in _ids(asyncio.run(fresh.search(query, 3, Exclusions())))
