"""The profile store: what the offline jobs write and training, export and the refresh job read.

A profile store is one folder with two Parquet files:

``profiles.parquet`` - one row per profile text:
    entity_type   str    "user" or "item"
    entity_id     str    the raw id (as in the dataset's id maps)
    slot          int    0 = the original profile (ProEx OP), 1..K-1 = the new profiles (NPs)
    text          str
    strategy      str    "proex" | "reclm" | "duet" | "extractive" | "external"
    stage         str    what the text is: "original" | "new" | "collaborative" | "duet" | "fallback" ...
    model         str    generator model name ("extractive" for the deterministic fallback)
    prompt_version str
    seed          int
    created_at    str    ISO-8601 UTC
    is_fallback   bool   True when the LLM output was rejected and replaced by an extractive profile
    quality       str    JSON: validation verdicts, similarities to the original / siblings, retries
    version       str    the profile-set version this row belongs to

``profile_vectors.parquet`` - one row per entity, the K embedded profiles:
    entity_type, entity_id, version
    embedding_model str
    k        int    number of profiles stored for this entity (<= K of the store)
    dim      int    embedding dimension d_s
    vectors  list<float32> of length k * dim, row-major (profile slot order), L2-normalised rows

Readers get dense arrays ``[N, K, d]`` plus a boolean mask ``[N, K]`` for the slots that exist, in the
order of the ids they ask for (entities without profiles get an all-False mask and zero vectors).

pyarrow is imported lazily: the service never reads this store (it reads Redis and Qdrant).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rec_contract.atomic import atomic_file, atomic_write_text

PROFILES_FILE = "profiles.parquet"
VECTORS_FILE = "profile_vectors.parquet"
STORE_META_FILE = "store.json"
ENTITY_TYPES = ("user", "item")

PROFILE_COLUMNS = (
    "entity_type",
    "entity_id",
    "slot",
    "text",
    "strategy",
    "stage",
    "model",
    "prompt_version",
    "seed",
    "created_at",
    "is_fallback",
    "quality",
    "version",
)


@dataclass
class ProfileVectors:
    """Dense profile vectors for one entity type, aligned with a list of ids."""

    ids: np.ndarray  # raw ids, str
    vectors: np.ndarray  # float32 [N, K, d]
    mask: np.ndarray  # bool [N, K]
    embedding_model: str
    version: str

    @property
    def k(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[2])

    def coverage(self) -> float:
        """Fraction of entities that have at least one profile."""
        return float(self.mask.any(axis=1).mean()) if len(self.mask) else 0.0

    def mean_pooled(self) -> np.ndarray:
        """Masked mean over the K profiles, ``[N, d]`` (zeros where an entity has none)."""
        weights = self.mask.astype(np.float32)
        total = weights.sum(axis=1, keepdims=True)
        pooled = (self.vectors * weights[:, :, None]).sum(axis=1) / np.maximum(total, 1.0)
        return pooled.astype(np.float32)


def _pa() -> Any:
    import pyarrow as pa  # lazy: jobs-only dependency

    return pa


def write_profiles(folder: str | Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write ``profiles.parquet`` atomically. Every row must have the :data:`PROFILE_COLUMNS`."""
    pa = _pa()
    import pyarrow.parquet as pq

    folder = Path(folder)
    for row in rows:
        missing = [c for c in PROFILE_COLUMNS if c not in row]
        if missing:
            raise ValueError(f"profile row lacks {missing}")
    columns = {c: [row[c] for row in rows] for c in PROFILE_COLUMNS}
    columns["quality"] = [q if isinstance(q, str) else json.dumps(q) for q in columns["quality"]]
    schema = pa.schema(
        [
            ("entity_type", pa.string()),
            ("entity_id", pa.string()),
            ("slot", pa.int16()),
            ("text", pa.string()),
            ("strategy", pa.string()),
            ("stage", pa.string()),
            ("model", pa.string()),
            ("prompt_version", pa.string()),
            ("seed", pa.int64()),
            ("created_at", pa.string()),
            ("is_fallback", pa.bool_()),
            ("quality", pa.string()),
            ("version", pa.string()),
        ]
    )
    table = pa.table(columns, schema=schema)
    with atomic_file(folder / PROFILES_FILE) as tmp:
        pq.write_table(table, tmp)
    return folder / PROFILES_FILE


def read_profiles(folder: str | Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    table = pq.read_table(Path(folder) / PROFILES_FILE)
    rows: list[dict[str, Any]] = table.to_pylist()
    return rows


def write_profile_vectors(
    folder: str | Path,
    entries: Iterable[tuple[str, str, np.ndarray]],
    embedding_model: str,
    version: str,
) -> Path:
    """Write ``profile_vectors.parquet`` atomically from ``(entity_type, entity_id, vectors[k, d])``."""
    pa = _pa()
    import pyarrow.parquet as pq

    folder = Path(folder)
    types, ids, ks, dims, flat = [], [], [], [], []
    for entity_type, entity_id, vectors in entries:
        if entity_type not in ENTITY_TYPES:
            raise ValueError(f"entity_type must be one of {ENTITY_TYPES}, got {entity_type!r}")
        arr = np.asarray(vectors, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[0] == 0:
            raise ValueError(f"vectors for {entity_type} {entity_id} must be [k>=1, d], got {arr.shape}")
        types.append(entity_type)
        ids.append(str(entity_id))
        ks.append(arr.shape[0])
        dims.append(arr.shape[1])
        flat.append(arr.ravel())
    if len(set(dims)) > 1:
        raise ValueError(f"all profile vectors must share one dimension, got {sorted(set(dims))}")
    table = pa.table(
        {
            "entity_type": pa.array(types, pa.string()),
            "entity_id": pa.array(ids, pa.string()),
            "version": pa.array([version] * len(ids), pa.string()),
            "embedding_model": pa.array([embedding_model] * len(ids), pa.string()),
            "k": pa.array(ks, pa.int16()),
            "dim": pa.array(dims, pa.int32()),
            "vectors": pa.array(flat, pa.list_(pa.float32())),
        }
    )
    with atomic_file(folder / VECTORS_FILE) as tmp:
        pq.write_table(table, tmp)
    meta = {
        "embedding_model": embedding_model,
        "version": version,
        "dim": dims[0] if dims else None,
        "k_max": max(ks) if ks else 0,
        "counts": {t: types.count(t) for t in ENTITY_TYPES},
    }
    atomic_write_text(folder / STORE_META_FILE, json.dumps(meta, indent=2))
    return folder / VECTORS_FILE


def read_profile_vectors(
    folder: str | Path, entity_type: str, ids: Sequence[str] | np.ndarray, k: int | None = None
) -> ProfileVectors:
    """Dense ``[len(ids), K, d]`` vectors for ``ids`` (raw ids) of ``entity_type``.

    ``k`` caps or pads the number of slots (default: the largest k in the store). Ids absent from the
    store get a zero row and an all-False mask; the caller decides whether that is acceptable.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if entity_type not in ENTITY_TYPES:
        raise ValueError(f"entity_type must be one of {ENTITY_TYPES}")
    table = pq.read_table(Path(folder) / VECTORS_FILE)
    table = table.filter(pc.equal(table["entity_type"], entity_type))
    if table.num_rows == 0:
        raise ValueError(f"profile store {folder} has no {entity_type} vectors")
    dims = set(table["dim"].to_pylist())
    if len(dims) != 1:
        raise ValueError(f"mixed dimensions {dims} in {folder}")
    dim = dims.pop()
    k_store = max(table["k"].to_pylist())
    k = k or k_store
    index = {str(raw): pos for pos, raw in enumerate(ids)}
    vectors = np.zeros((len(ids), k, dim), dtype=np.float32)
    mask = np.zeros((len(ids), k), dtype=bool)
    entity_ids = table["entity_id"].to_pylist()
    counts = table["k"].to_pylist()
    flat = table["vectors"].to_pylist()
    for entity_id, count, values in zip(entity_ids, counts, flat, strict=True):
        pos = index.get(entity_id)
        if pos is None:
            continue
        arr = np.asarray(values, dtype=np.float32).reshape(count, dim)[:k]
        vectors[pos, : len(arr)] = arr
        mask[pos, : len(arr)] = True
    return ProfileVectors(
        ids=np.asarray([str(i) for i in ids], dtype=object),
        vectors=vectors,
        mask=mask,
        embedding_model=str(table["embedding_model"][0]),
        version=str(table["version"][0]),
    )


def read_store_vectors(folder: str | Path) -> tuple[list[tuple[str, str, np.ndarray]], str, str]:
    """Every entity's vectors ``(entity_type, entity_id, vectors[k, d])``, the embedding model and version."""
    import pyarrow.parquet as pq

    table = pq.read_table(Path(folder) / VECTORS_FILE)
    entries = [
        (str(t), str(e), np.asarray(v, dtype=np.float32).reshape(int(k), int(d)))
        for t, e, k, d, v in zip(
            table["entity_type"].to_pylist(),
            table["entity_id"].to_pylist(),
            table["k"].to_pylist(),
            table["dim"].to_pylist(),
            table["vectors"].to_pylist(),
            strict=True,
        )
    ]
    model = str(table["embedding_model"][0]) if table.num_rows else ""
    version = str(table["version"][0]) if table.num_rows else ""
    return entries, model, version


def merge_into_store(target: str | Path, delta: str | Path) -> dict[str, int]:
    """Replace, in the store ``target``, the profiles and vectors of every entity present in ``delta``
    (and add entities it did not have). Both files are rewritten atomically; the target keeps its
    version. Returns counts."""
    target, delta = Path(target), Path(delta)
    delta_rows = read_profiles(delta)
    changed = {(r["entity_type"], r["entity_id"]) for r in delta_rows}
    kept_rows = [r for r in read_profiles(target) if (r["entity_type"], r["entity_id"]) not in changed]
    base_entries, model, version = read_store_vectors(target)
    delta_entries, delta_model, _ = read_store_vectors(delta)
    if delta_model != model:
        raise ValueError(f"{delta} was embedded with {delta_model!r}, {target} with {model!r}")
    for row in delta_rows:
        row["version"] = version
    entries = [e for e in base_entries if (e[0], e[1]) not in changed] + delta_entries
    write_profiles(target, kept_rows + delta_rows)
    write_profile_vectors(target, entries, model, version)
    return {
        "entities_replaced": len(changed & {(e[0], e[1]) for e in base_entries}),
        "entities_added": len(changed - {(e[0], e[1]) for e in base_entries}),
        "rows": len(kept_rows) + len(delta_rows),
    }
