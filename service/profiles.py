"""Where the service reads the K profile vectors (and texts) of users and items.

* :class:`LocalProfiles` (the embedded default): the bundle's own copy of the profile store
  (``user_profiles.npy`` / ``item_profiles.npy`` with their masks, memory-mapped, and
  ``profile_texts.jsonl`` read on the first ``explain``) plus an overlay of refreshed profiles, logged
  in ``<online_dir>/profiles-<store version>.jsonl`` by whoever writes them (the refresh job, the admin
  route, new items) and followed by every worker process before it reads.
* :class:`QdrantProfiles`: the profiles collection of a Qdrant server.

Every text carries its explanation label (``rec_contract.explanations``: source, grounding verdict,
the items it is grounded on), from the bundle's ``profile_texts.jsonl``, the overlay events or the
Qdrant payload; :meth:`EntityProfiles.explanations` keeps only the profiles that may be shown.

Both give each entity a *revision* that changes whenever its profiles change in this process's view;
the user-vector cache tags its entries with it.
"""

from __future__ import annotations

import abc
import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rec_contract.event_log import LogFollower, append_events
from rec_contract.explanations import explanations, labels_for
from rec_contract.qdrant_schema import now_iso, profile_point
from service.stores.qdrant import QdrantConnection, qdrant_profile, qdrant_upsert_profile

log = logging.getLogger(__name__)

USER_PROFILES = "user_profiles.npy"
USER_PROFILE_MASK = "user_profile_mask.npy"
ITEM_PROFILES = "item_profiles.npy"
ITEM_PROFILE_MASK = "item_profile_mask.npy"
PROFILE_TEXTS = "profile_texts.jsonl"


@dataclass
class EntityProfiles:
    """The K embedded profiles of one user or item, with their texts."""

    vectors: np.ndarray  # float32 [k, dim]
    texts: list[str]
    labels: list[dict[str, Any] | None] = field(default_factory=list)  # one per text (None: unknown)

    def explanations(self) -> list[dict[str, Any]]:
        """``{text, source, grounded_on}`` of the profiles that passed the grounding check."""
        return explanations(self.texts, self.labels)


class ProfileSource(abc.ABC):
    # True when every profile change reaches this process through :meth:`sync` (so :meth:`revision`
    # is the whole truth); False when others write the store directly (a Qdrant server).
    local_revisions = False

    def sync(self) -> None:  # noqa: B027 - optional hook
        """Apply profile writes made by other processes."""

    def revision(self, entity_type: str, raw_id: str) -> int:
        """A number that changes when the entity's profiles change (0: unknown to this process)."""
        return 0

    @abc.abstractmethod
    async def get(self, entity_type: str, raw_id: str, texts: bool = False) -> EntityProfiles | None:
        """The entity's profile vectors (and texts when asked), or None when it has none."""

    @abc.abstractmethod
    async def upsert(
        self,
        entity_type: str,
        raw_id: str,
        vectors: np.ndarray,
        texts: Sequence[str],
        strategy: str = "",
        is_fallback: Sequence[bool] | None = None,
        labels: Sequence[dict[str, Any] | None] | None = None,
    ) -> None:
        """Write an entity's profiles (visible to every process's next read); ``labels``: one
        explanation label per text (None: derived from ``is_fallback``)."""


class LocalProfiles(ProfileSource):
    local_revisions = True

    def __init__(
        self,
        folder: Path,
        user_ids: dict[str, int],
        item_ids: dict[str, int],
        k: int,
        dim: int,
        overlay_path: Path,
    ) -> None:
        self.folder = folder
        self.index = {"user": user_ids, "item": item_ids}
        self.k = max(1, k)
        self.dim = dim
        self.base: dict[str, tuple[np.ndarray, np.ndarray] | None] = {}
        for entity_type, vec_file, mask_file in (
            ("user", USER_PROFILES, USER_PROFILE_MASK),
            ("item", ITEM_PROFILES, ITEM_PROFILE_MASK),
        ):
            if (folder / vec_file).exists():
                vectors = np.load(folder / vec_file, mmap_mode="r")
                mask = np.load(folder / mask_file)
                self.base[entity_type] = (vectors, mask)
            else:
                self.base[entity_type] = None
        self._texts: dict[tuple[str, str], tuple[list[str], list[dict[str, Any] | None]]] | None = None
        self.overlay: dict[tuple[str, str], EntityProfiles] = {}
        self.revisions: dict[tuple[str, str], int] = {}
        self.path = overlay_path
        self.follower = LogFollower(overlay_path)
        self.sync()

    def sync(self) -> None:
        events, reset = self.follower.poll()
        if reset:
            self.overlay.clear()
        for event in events:
            key = (str(event.get("entity_type")), str(event.get("entity_id")))
            try:
                vectors = np.asarray(event["vectors"], dtype=np.float32)
            except (KeyError, ValueError):
                continue
            if vectors.ndim != 2 or vectors.shape[1] != self.dim:
                log.warning("profile overlay event with a wrong shape skipped", extra={"entity": key})
                continue
            texts = [str(t) for t in event.get("texts", [])]
            labels = labels_for(
                len(texts), event.get("labels"), event.get("is_fallback"), str(event.get("strategy", ""))
            )
            self.overlay[key] = EntityProfiles(vectors[: self.k], texts, labels)
            self.revisions[key] = self.revisions.get(key, 0) + 1

    def revision(self, entity_type: str, raw_id: str) -> int:
        return self.revisions.get((entity_type, raw_id), 0)

    def _base_texts(self, entity_type: str, raw_id: str) -> tuple[list[str], list[dict[str, Any] | None]]:
        if self._texts is None:
            texts: dict[tuple[str, str], tuple[list[str], list[dict[str, Any] | None]]] = {}
            path = self.folder / PROFILE_TEXTS
            if path.exists():
                with path.open(encoding="utf-8") as fh:
                    for line in fh:
                        row = json.loads(line)
                        found = [str(t) for t in row["texts"]]
                        # bundles exported before labels existed: every text is unknown (not shown)
                        texts[(row["entity_type"], row["entity_id"])] = (
                            found,
                            labels_for(len(found), row.get("labels")),
                        )
            self._texts = texts
        return self._texts.get((entity_type, raw_id), ([], []))

    async def get(self, entity_type: str, raw_id: str, texts: bool = False) -> EntityProfiles | None:
        found = self.overlay.get((entity_type, raw_id))
        if found is not None:
            return found
        base = self.base.get(entity_type)
        row = self.index[entity_type].get(raw_id)
        if base is None or row is None:
            return None
        vectors, mask = base
        kept = mask[row]
        if not kept.any():
            return None
        value = np.asarray(vectors[row][kept][: self.k], dtype=np.float32)
        if not texts:
            return EntityProfiles(value, [])
        loaded, labels = (
            await asyncio.to_thread(self._base_texts, entity_type, raw_id)
            if self._texts is None
            else (self._base_texts(entity_type, raw_id))
        )
        return EntityProfiles(value, loaded, labels)

    async def upsert(
        self,
        entity_type: str,
        raw_id: str,
        vectors: np.ndarray,
        texts: Sequence[str],
        strategy: str = "",
        is_fallback: Sequence[bool] | None = None,
        labels: Sequence[dict[str, Any] | None] | None = None,
    ) -> None:
        event: dict[str, Any] = {
            "entity_type": entity_type,
            "entity_id": raw_id,
            "vectors": np.asarray(vectors, np.float32).tolist(),
            "texts": list(texts),
            "strategy": strategy,
            "is_fallback": [bool(f) for f in is_fallback] if is_fallback else None,
            "labels": labels_for(len(texts), labels, is_fallback, strategy),
            "at": now_iso(),
        }
        await asyncio.to_thread(append_events, self.path, [event])
        self.sync()


class QdrantProfiles(ProfileSource):
    def __init__(self, conn: QdrantConnection, collection: str, store_version: str) -> None:
        self.conn = conn
        self.collection = collection
        self.store_version = store_version

    async def get(self, entity_type: str, raw_id: str, texts: bool = False) -> EntityProfiles | None:
        found = await qdrant_profile(self.conn, self.collection, entity_type, raw_id)
        if found is None:
            return None
        vectors, texts_found, payload = found
        strategy = str(payload.get("strategy", ""))
        labels = labels_for(len(texts_found), payload.get("labels"), payload.get("is_fallback"), strategy)
        return EntityProfiles(vectors, texts_found, labels)

    async def upsert(
        self,
        entity_type: str,
        raw_id: str,
        vectors: np.ndarray,
        texts: Sequence[str],
        strategy: str = "",
        is_fallback: Sequence[bool] | None = None,
        labels: Sequence[dict[str, Any] | None] | None = None,
    ) -> None:
        point = profile_point(
            entity_type,
            raw_id,
            vectors,
            texts,
            self.store_version,
            strategy,
            list(is_fallback or []) or None,
            labels_for(len(texts), labels, is_fallback, strategy),
        )
        await qdrant_upsert_profile(self.conn, self.collection, point)
