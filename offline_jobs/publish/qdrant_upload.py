"""Upload a profile store's vectors to Qdrant (``rec_contract.naming``).

Collection ``profiles_<version>``; one point per user and item, built by
``rec_contract.qdrant_schema.profile_point``: id ``point_id(entity_type, raw_id)``; named vectors
``profiles`` (multivector K x d, MAX_SIM) and ``mean`` (mean-pooled, re-normalised, cosine); payload
``entity_type``, ``entity_id``, ``texts`` (the K profile texts in slot order), ``k``, ``strategy``,
``is_fallback`` (one 0/1 int per slot: qdrant-edge stores booleans wrongly), ``version``,
``updated_at``, ``labels`` (each text's explanation label: source, grounding verdict, the items it
is grounded on; ``rec_contract.explanations``), plus ``any_fallback`` (0/1). The alias ``profiles``
is then switched to the new collection in one atomic alias operation. qdrant-client local mode (a
folder) by default, or a server.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rec_contract.explanations import label_of_row
from rec_contract.naming import (
    PROFILES_ALIAS,
    profiles_collection,
)
from rec_contract.profile_store import ENTITY_TYPES, VECTORS_FILE, read_profiles
from rec_contract.qdrant_schema import profile_point, profiles_vectors_config

log = logging.getLogger(__name__)


def qdrant_client(path: str | Path | None = None, url: str | None = None, api_key: str | None = None) -> Any:
    from qdrant_client import QdrantClient

    if url:
        return QdrantClient(url=url, api_key=api_key, timeout=60)
    folder = Path(path or "var/qdrant")
    folder.mkdir(parents=True, exist_ok=True)
    return QdrantClient(path=str(folder))


def _read_vectors(store: Path) -> list[tuple[str, str, np.ndarray, str, str]]:
    import pyarrow.parquet as pq

    table = pq.read_table(store / VECTORS_FILE)
    out = []
    for et, eid, k, dim, flat, version, model in zip(
        table["entity_type"].to_pylist(),
        table["entity_id"].to_pylist(),
        table["k"].to_pylist(),
        table["dim"].to_pylist(),
        table["vectors"].to_pylist(),
        table["version"].to_pylist(),
        table["embedding_model"].to_pylist(),
        strict=True,
    ):
        out.append((et, eid, np.asarray(flat, dtype=np.float32).reshape(k, dim), version, model))
    return out


def upload_store(
    store: str | Path,
    client: Any,
    version: str | None = None,
    batch_size: int = 256,
    set_alias: bool = True,
    progress: Callable[[int], object] | None = None,
) -> dict[str, Any]:
    """Recreate ``profiles_<version>`` from the store and point the ``profiles`` alias at it."""
    from qdrant_client import models

    store = Path(store)
    entries = _read_vectors(store)
    if not entries:
        raise ValueError(f"{store} has no profile vectors")
    version = version or entries[0][3]
    name = profiles_collection(version)
    dim = int(entries[0][2].shape[1])
    texts: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    strategies: dict[tuple[str, str], str] = {}
    for row in read_profiles(store):
        key = (row["entity_type"], row["entity_id"])
        texts.setdefault(key, {})[int(row["slot"])] = row
        strategies[key] = row["strategy"]
    started = time.perf_counter()
    if client.collection_exists(name):
        client.delete_collection(name)
    client.create_collection(collection_name=name, vectors_config=profiles_vectors_config(dim))
    counts = dict.fromkeys(ENTITY_TYPES, 0)
    batch: list[Any] = []

    def flush() -> None:
        if batch:
            client.upsert(collection_name=name, points=list(batch), wait=True)
            if progress:
                progress(len(batch))
            batch.clear()

    for entity_type, entity_id, vectors, _, _ in entries:
        slots = texts.get((entity_type, entity_id), {})
        ordered = [slots[s] for s in sorted(slots)][: len(vectors)]
        flags = [bool(r["is_fallback"]) for r in ordered]
        point = profile_point(
            entity_type,
            entity_id,
            vectors,
            [str(r["text"]) for r in ordered],
            version,
            strategies.get((entity_type, entity_id), ""),
            flags,
            [label_of_row(r) for r in ordered],
        )
        assert point.payload is not None
        point.payload["any_fallback"] = int(any(flags))
        batch.append(point)
        counts[entity_type] += 1
        if len(batch) >= batch_size:
            flush()
    flush()
    if set_alias:
        ops: list[Any] = []
        aliases = {a.alias_name: a.collection_name for a in client.get_aliases().aliases}
        if PROFILES_ALIAS in aliases:
            ops.append(
                models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=PROFILES_ALIAS))
            )
        ops.append(
            models.CreateAliasOperation(
                create_alias=models.CreateAlias(collection_name=name, alias_name=PROFILES_ALIAS)
            )
        )
        client.update_collection_aliases(change_aliases_operations=ops)
    report = {
        "collection": name,
        "alias": PROFILES_ALIAS if set_alias else None,
        "points": sum(counts.values()),
        "counts": counts,
        "dim": dim,
        "upload_seconds": round(time.perf_counter() - started, 2),
    }
    log.info("uploaded profile vectors", extra=report)
    return report
