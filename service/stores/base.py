"""The retrieval store: one small interface between the request path and whatever holds the item vectors.

An :class:`ItemEngine` opens one :class:`ItemIndex` per bundle (the items of that bundle's vector space);
the runtime switches bundle and index together. Implementations:

* :mod:`service.stores.local`: in-process, for the embedded default. An immutable base built from the
  bundle (exact numpy product, or Qdrant's HNSW engine through ``qdrant-edge-py`` for large
  catalogues) plus an overlay of the items added, edited or deleted through the API, kept in an
  append-only log that every worker process follows (so several uvicorn workers agree);
* :mod:`service.stores.qdrant`: a Qdrant server (``PROFILEREC_QDRANT_URL``), filters native; also the
  qdrant-client local mode on a path (single process, a stand-in for the server in tests).

Every implementation passes the same contract suite (``tests/integration/test_item_store_contract.py``).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

EMPTY_INDICES = np.zeros(0, np.int64)


@dataclass(frozen=True)
class Exclusions:
    """Items an answer must not contain: ``indices`` into the bundle's catalogue (integer masks, no
    strings on the hot path) and raw ``ids`` (items added through the API, or request parameters)."""

    indices: np.ndarray = field(default_factory=lambda: EMPTY_INDICES)
    ids: frozenset[str] = frozenset()


@dataclass
class ItemHit:
    item_id: str
    score: float
    payload: dict[str, Any]


class ItemIndex(abc.ABC):
    """The items of one bundle: top-N by dot product with filters, reads and writes by raw id."""

    engine: str = ""

    @property
    def revision(self) -> int | None:
        """A number that changes with every write this process has applied, or None when writes can
        happen without this process seeing them (then nothing derived from the index is kept)."""
        return None

    def sync(self) -> None:  # noqa: B027 - optional hook
        """Apply writes made by other processes since the last call (cheap when there are none)."""

    @abc.abstractmethod
    async def search(
        self, vector: np.ndarray, n: int, exclude: Exclusions, categories: Sequence[str] = ()
    ) -> list[ItemHit]:
        """The ``n`` best items by dot product with ``vector``, none of ``exclude``, and when
        ``categories`` is given only items in at least one of them; best first."""

    @abc.abstractmethod
    async def payloads(self, item_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Payloads of the items that exist (absent or deleted ids are left out)."""

    @abc.abstractmethod
    async def vectors(self, item_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Vectors of the items that exist."""

    @abc.abstractmethod
    async def upsert(self, item_id: str, vector: np.ndarray, payload: dict[str, Any]) -> None:
        """Add an item or replace one (vector and payload); visible to the next search of every
        process."""

    @abc.abstractmethod
    async def delete(self, item_id: str) -> bool:
        """Remove an item from every later answer. False if it did not exist."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the index holds."""


class ItemEngine(abc.ABC):
    """Opens the :class:`ItemIndex` of a bundle (called off the request path, before switching)."""

    name: str = ""

    @abc.abstractmethod
    async def open(
        self,
        version: str,
        collection: str,
        item_ids: Sequence[str],
        vectors: np.ndarray,
        meta: Sequence[dict[str, Any]],
    ) -> ItemIndex:
        """The index of a bundle ``version`` whose catalogue is ``item_ids`` with ``vectors`` and
        ``meta`` (title, categories, popularity, profile_snippet per item)."""

    async def ping(self) -> str | None:
        return None

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
