"""In-process retrieval for the embedded default: an immutable base built from the bundle plus an overlay.

* The **base** holds the bundle's catalogue: :class:`ExactBase` (one float32 matrix product, exact,
  right for up to a few hundred thousand items) or ``service.stores.edge.EdgeBase`` (Qdrant's HNSW
  engine in-process, for large catalogues). Exclusions and category filters are integer masks.
* The **overlay** holds what the API changed since the bundle was built: items added, catalogue items
  edited (their metadata, or their vector when the refresh re-encodes them) and deleted. Every change
  is appended to ``<online_dir>/items-<bundle version>.jsonl`` (one write under ``flock``, fsynced)
  before it is acknowledged, and every worker process follows that log before it searches, so an item
  added through one worker is in the next answer of every worker, and survives a restart. A changed
  catalogue item is *shadowed* in the base (left out of its search) and lives in the overlay rows.

A search asks the base for the best ``n`` outside exclusions and shadowed items, scores the overlay
rows exactly, and merges the two.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rec_contract.event_log import LogFollower, append_events
from rec_contract.paths import edge_shard_dir, overlay_file
from rec_contract.qdrant_schema import now_iso
from service.stores.base import Exclusions, ItemEngine, ItemHit, ItemIndex

log = logging.getLogger(__name__)

# Above this many catalogue items the exact product is run off the event loop (a few ms).
THREAD_ABOVE_ITEMS = 100_000


def top_n(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` highest finite scores, best first (ties by index)."""
    n = min(n, len(scores))
    if n <= 0:
        return np.zeros(0, np.int64)
    part = np.argpartition(-scores, n - 1)[:n] if n < len(scores) else np.arange(len(scores))
    order = part[np.lexsort((part, -scores[part]))]
    return order[np.isfinite(scores[order])]


class CategoryMasks:
    """Category filters as boolean rows over items: ``mask(["Sci-Fi", "Horror"])`` is an OR."""

    def __init__(self, categories: Sequence[Sequence[str]]) -> None:
        names = sorted({str(c) for cats in categories for c in cats})
        self.column = {name: i for i, name in enumerate(names)}
        self.matrix = np.zeros((len(names), len(categories)), dtype=bool)
        for row, cats in enumerate(categories):
            for c in cats:
                self.matrix[self.column[str(c)], row] = True

    def mask(self, categories: Sequence[str]) -> np.ndarray:
        wanted = [self.column[c] for c in categories if c in self.column]
        if not wanted:
            return np.zeros(self.matrix.shape[1], dtype=bool)
        return np.asarray(self.matrix[wanted].any(axis=0))


class BaseIndex(Protocol):
    """The bundle's catalogue, immutable. Rows are catalogue indices."""

    def search(
        self, vector: np.ndarray, n: int, exclude: np.ndarray, categories: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(indices, scores)`` of the best ``n`` rows not in ``exclude`` (int64 indices), best first."""
        ...


class ExactBase:
    """Exact top-N: one matrix-vector product over the catalogue."""

    engine = "exact"

    def __init__(self, vectors: np.ndarray, categories: Sequence[Sequence[str]]) -> None:
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.categories = CategoryMasks(categories)

    def search(
        self, vector: np.ndarray, n: int, exclude: np.ndarray, categories: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        scores = self.vectors @ np.asarray(vector, dtype=np.float32)
        if len(exclude):
            scores[exclude] = -np.inf
        if categories:
            scores[~self.categories.mask(categories)] = -np.inf
        order = top_n(scores, n)
        return order, scores[order]


class ItemOverlay:
    """The items the API added or changed, as exact rows, rebuilt from and kept in step with a log."""

    def __init__(self, base_index: dict[str, int], dim: int, path: Path) -> None:
        self.base_index = base_index
        self.dim = dim
        self.path = path
        self.follower = LogFollower(path)
        self.applied = 0  # changes applied so far (the index's revision)
        self._clear()

    def _clear(self) -> None:
        self.ids: list[str] = []
        self.row_of: dict[str, int] = {}
        self.vectors = np.zeros((16, self.dim), np.float32)
        self.payloads: list[dict[str, Any]] = []
        self.alive = np.zeros(16, dtype=bool)
        self.base_rows = np.full(16, -1, np.int64)  # the catalogue row an overlay row replaces, or -1
        self.category_rows: dict[str, np.ndarray] = {}  # category -> bool over overlay rows
        self.shadowed: set[int] = set()  # catalogue rows replaced or deleted by the overlay
        self.deleted: set[str] = set()
        self._shadow_array = np.zeros(0, np.int64)

    def sync(self) -> None:
        events, reset = self.follower.poll()
        if reset:
            self._clear()
            self.applied += 1
        for event in events:
            self.apply(event)
        self.applied += len(events)

    def apply(self, event: dict[str, Any]) -> None:
        item_id = str(event.get("item_id", ""))
        op = event.get("op")
        base_row = self.base_index.get(item_id)
        if op == "upsert":
            vector = np.asarray(event["vector"], dtype=np.float32)
            if vector.shape != (self.dim,):
                log.warning("overlay event with a wrong vector shape skipped", extra={"item": item_id})
                return
            row = self.row_of.get(item_id)
            if row is None:
                row = len(self.ids)
                if row >= len(self.vectors):
                    self.vectors = np.concatenate([self.vectors, np.zeros_like(self.vectors)])
                    self.alive = np.concatenate([self.alive, np.zeros_like(self.alive)])
                    self.base_rows = np.concatenate([self.base_rows, np.full_like(self.base_rows, -1)])
                    for name, rows in self.category_rows.items():
                        self.category_rows[name] = np.concatenate([rows, np.zeros_like(rows)])
                self.ids.append(item_id)
                self.payloads.append({})
                self.row_of[item_id] = row
                self.base_rows[row] = -1 if base_row is None else base_row
            self.vectors[row] = vector
            payload = dict(event.get("payload") or {})
            self.payloads[row] = payload
            for rows in self.category_rows.values():
                rows[row] = False
            for name in {str(c) for c in payload.get("categories", [])}:
                if name not in self.category_rows:
                    self.category_rows[name] = np.zeros(len(self.vectors), dtype=bool)
                self.category_rows[name][row] = True
            self.alive[row] = True
            self.deleted.discard(item_id)
        elif op == "delete":
            row = self.row_of.get(item_id)
            if row is not None:
                self.alive[row] = False
            self.deleted.add(item_id)
        else:
            return
        if base_row is not None and base_row not in self.shadowed:
            self.shadowed.add(base_row)
            self._shadow_array = np.fromiter(sorted(self.shadowed), np.int64, len(self.shadowed))

    @property
    def shadow_indices(self) -> np.ndarray:
        return self._shadow_array

    def search(
        self, vector: np.ndarray, n: int, exclude: Exclusions, categories: Sequence[str]
    ) -> list[tuple[int, float]]:
        count = len(self.ids)
        if count == 0:
            return []
        scores = self.vectors[:count] @ vector
        scores[~self.alive[:count]] = -np.inf
        if len(exclude.indices) and len(self.shadowed):  # catalogue items excluded by index
            scores[np.isin(self.base_rows[:count], exclude.indices)] = -np.inf
        for item_id in exclude.ids:
            row = self.row_of.get(item_id)
            if row is not None:
                scores[row] = -np.inf
        if categories:
            allowed = np.zeros(count, dtype=bool)
            for name in categories:
                rows = self.category_rows.get(name)
                if rows is not None:
                    allowed |= rows[:count]
            scores[~allowed] = -np.inf
        order = top_n(scores, n)
        return [(int(r), float(scores[r])) for r in order]

    def append(self, events: list[dict[str, Any]]) -> None:
        """Durably log ``events`` (then the next :meth:`sync` of every process applies them)."""
        append_events(self.path, events)


class LocalItemIndex(ItemIndex):
    def __init__(
        self,
        base: BaseIndex,
        engine: str,
        item_ids: Sequence[str],
        meta: Sequence[dict[str, Any]],
        vectors: np.ndarray,
        overlay_path: Path,
    ) -> None:
        self.base = base
        self.engine = engine
        self.item_ids = list(item_ids)
        self.index = {item_id: i for i, item_id in enumerate(self.item_ids)}
        self.meta = meta
        self.base_vectors = vectors
        self.overlay = ItemOverlay(self.index, int(vectors.shape[1]), overlay_path)
        self.overlay.sync()

    def sync(self) -> None:
        self.overlay.sync()

    @property
    def revision(self) -> int | None:
        return self.overlay.applied

    def _base_payload(self, row: int) -> dict[str, Any]:
        info = self.meta[row]
        return {"item_id": self.item_ids[row], "index": row, **info}

    def _search(
        self, vector: np.ndarray, n: int, exclude: Exclusions, categories: Sequence[str]
    ) -> list[ItemHit]:
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        blocked = exclude.indices
        id_rows = [self.index[i] for i in exclude.ids if i in self.index]
        parts = [p for p in (blocked, np.asarray(id_rows, np.int64), self.overlay.shadow_indices) if len(p)]
        if len(parts) > 1:
            blocked = np.concatenate(parts)
        elif parts:
            blocked = parts[0]
        rows, scores = self.base.search(query, n, blocked, categories)
        hits = [
            ItemHit(self.item_ids[r], float(s), self._base_payload(int(r)))
            for r, s in zip(rows.tolist(), scores.tolist(), strict=True)
        ]
        extra = self.overlay.search(query, n, exclude, categories)
        if extra:
            hits.extend(ItemHit(self.overlay.ids[r], s, self.overlay.payloads[r]) for r, s in extra)
            hits.sort(key=lambda h: -h.score)
            hits = hits[:n]
        return hits

    async def search(
        self, vector: np.ndarray, n: int, exclude: Exclusions, categories: Sequence[str] = ()
    ) -> list[ItemHit]:
        if len(self.item_ids) > THREAD_ABOVE_ITEMS:
            return await asyncio.to_thread(self._search, vector, n, exclude, categories)
        return self._search(vector, n, exclude, categories)

    def _lookup(self, item_id: str) -> tuple[np.ndarray, dict[str, Any]] | None:
        row = self.overlay.row_of.get(item_id)
        if row is not None:
            if not self.overlay.alive[row]:
                return None
            return self.overlay.vectors[row], self.overlay.payloads[row]
        if item_id in self.overlay.deleted:
            return None
        base = self.index.get(item_id)
        if base is None:
            return None
        return np.asarray(self.base_vectors[base], np.float32), self._base_payload(base)

    async def payloads(self, item_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        out = {}
        for item_id in item_ids:
            found = self._lookup(item_id)
            if found is not None:
                out[item_id] = found[1]
        return out

    async def vectors(self, item_ids: Sequence[str]) -> dict[str, np.ndarray]:
        out = {}
        for item_id in item_ids:
            found = self._lookup(item_id)
            if found is not None:
                out[item_id] = np.array(found[0], dtype=np.float32)
        return out

    async def upsert(self, item_id: str, vector: np.ndarray, payload: dict[str, Any]) -> None:
        event = {
            "op": "upsert",
            "item_id": item_id,
            "vector": np.asarray(vector, np.float32).reshape(-1).tolist(),
            "payload": payload,
            "at": now_iso(),
        }
        await asyncio.to_thread(self.overlay.append, [event])
        self.overlay.sync()

    async def delete(self, item_id: str) -> bool:
        existed = self._lookup(item_id) is not None
        if existed:
            event = {"op": "delete", "item_id": item_id, "at": now_iso()}
            await asyncio.to_thread(self.overlay.append, [event])
            self.overlay.sync()
        return existed


class LocalEngine(ItemEngine):
    """In-process indexes; ``kind``: ``exact``, ``edge`` or ``auto`` (edge above ``edge_above`` items)."""

    def __init__(
        self, online_dir: Path, kind: str = "auto", edge_above: int = 200_000, edge_ef: int = 128
    ) -> None:
        self.online_dir = Path(online_dir)
        self.kind = kind
        self.edge_above = edge_above
        self.edge_ef = edge_ef
        self.name = f"local-{kind}"

    def overlay_path(self, version: str) -> Path:
        return overlay_file(self.online_dir, version)

    async def open(
        self,
        version: str,
        collection: str,
        item_ids: Sequence[str],
        vectors: np.ndarray,
        meta: Sequence[dict[str, Any]],
    ) -> ItemIndex:
        kind = self.kind
        if kind == "auto":
            kind = "edge" if len(item_ids) > self.edge_above else "exact"
        categories = [m.get("categories", []) for m in meta]
        base: BaseIndex
        if kind == "edge":
            from service.stores.edge import EdgeBase

            base = await asyncio.to_thread(
                EdgeBase.open, edge_shard_dir(self.online_dir, version), vectors, categories, ef=self.edge_ef
            )
        else:
            base = ExactBase(vectors, categories)
        return await asyncio.to_thread(
            LocalItemIndex, base, kind, item_ids, meta, vectors, self.overlay_path(version)
        )
