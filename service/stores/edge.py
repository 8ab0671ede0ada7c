"""The bundle's catalogue as an HNSW index in-process: Qdrant's engine through ``qdrant-edge-py``.

:class:`EdgeBase` is the ``BaseIndex`` of :mod:`service.stores.local` for large catalogues (the exact
matrix product costs a few ms per query at a few hundred thousand items and grows linearly). It is
read-only: the catalogue of a bundle never changes, the overlay of ``local.py`` holds the API's writes.

Several uvicorn workers share one shard on disk:

* :meth:`EdgeBase.open` builds the shard once per folder. Under an exclusive ``flock`` on
  ``<folder>.lock`` it checks ``<folder>/profilerec-edge.json`` (item count, dimension, SHA-256 of the
  vectors and of the categories, the build parameters, the engine version); when that marker is
  missing or different it builds the shard in a temporary sibling folder, writes the marker last and
  renames the folder into place, so a crashed build never leaves a folder that looks complete and a
  worker that starts while another builds waits for it and then reuses its shard.
* The shard is created with the write-ahead log disabled: a WAL is locked by the first process that
  loads the shard (a second ``EdgeShard.load`` fails), without one every worker loads the same folder.
  Each worker memory-maps the same files (the page cache is shared), and none of them writes points.

Point ids are the catalogue rows; the only payload is ``categories`` (a keyword list with a payload
index). Exclusions are a ``must_not`` has-id condition, categories a match-any: both are applied inside
the HNSW traversal, so an answer has ``n`` hits whenever ``n`` items pass the filter. No boolean payload
(``qdrant-edge-py`` 0.9 stores booleans as 1, so a boolean filter never matches).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_edge import (
    Distance,
    EdgeConfig,
    EdgeOptimizersConfig,
    EdgeShard,
    EdgeVectorParams,
    FieldCondition,
    Filter,
    HasIdCondition,
    HnswIndexConfig,
    MatchAny,
    PayloadSchemaType,
    Point,
    Query,
    SearchParams,
    SearchRequest,
    UpdateOperation,
)

log = logging.getLogger(__name__)

MARKER = "profilerec-edge.json"
FORMAT = 1
CATEGORIES = "categories"

# HNSW parameters (benchmarks/retrieval_scale.py has the figures). m=16, ef_construct=100.
# payload_m=m: Qdrant adds, for every category holding more than full_scan_threshold points, links
# among that category's points. They are what keeps a filtered search accurate: the filtered traversal
# only walks through points that pass the filter, and without them (payload_m=0) recall@20 with a
# 1-2 category filter (10-20% of the items) fell to 0.2-0.45 at 100k items. They cost build time: at
# 1M items and 20 categories about 2M more insertions than the 1M of the main graph.
# A filter matching fewer than full_scan_threshold points is answered exactly from the payload index.
HNSW_M = 16
HNSW_EF_CONSTRUCT = 100
PAYLOAD_M = HNSW_M
FULL_SCAN_THRESHOLD_KB = 10_000  # Qdrant's default: about 40k 64-d vectors
INDEXING_THREADS = 0  # 0: Qdrant's choice (one thread on two cores, which leaves a core to serving)
# Search ef (at least n): recall against cost. On structured vectors (trained embeddings, or clustered
# synthetic ones) 64-128 gives recall@20 >= 0.99; on i.i.d. Gaussian vectors, the worst case for any
# graph index, recall@20 at 1M items needs a much larger ef (see the benchmark).
SEARCH_EF = 128
# Segments larger than this (KB of vectors) get an HNSW graph; None keeps Qdrant's default (10 MB, about
# 40k 64-d vectors): below it a segment is scored exactly, which is as fast at that size.
INDEXING_THRESHOLD_KB: int | None = None
UPSERT_BATCH = 10_000

EMPTY_ROWS = np.zeros(0, np.int64)
EMPTY_SCORES = np.zeros(0, np.float32)


def _engine_version() -> str:
    try:
        return metadata.version("qdrant-edge-py")
    except metadata.PackageNotFoundError:  # pragma: no cover - installed under another name
        return "unknown"


def fingerprint(vectors: np.ndarray, categories: Sequence[Sequence[str]]) -> dict[str, Any]:
    """What identifies a built shard: the data (count, dimension, hashes) and how it was built."""
    data = np.ascontiguousarray(vectors, dtype=np.float32)
    cats = json.dumps([[str(c) for c in row] for row in categories], separators=(",", ":"))
    return {
        "format": FORMAT,
        "engine": _engine_version(),
        "n": int(data.shape[0]),
        "d": int(data.shape[1]),
        "vectors_sha256": hashlib.sha256(data.data.cast("B")).hexdigest(),
        "categories_sha256": hashlib.sha256(cats.encode()).hexdigest(),
        "hnsw": {
            "m": HNSW_M,
            "ef_construct": HNSW_EF_CONSTRUCT,
            "payload_m": PAYLOAD_M,
            "full_scan_threshold_kb": FULL_SCAN_THRESHOLD_KB,
            "indexing_threshold_kb": INDEXING_THRESHOLD_KB,
        },
        "distance": "dot",
    }


def read_marker(folder: Path) -> dict[str, Any] | None:
    try:
        value = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _matches(marker: dict[str, Any] | None, wanted: dict[str, Any]) -> bool:
    return marker is not None and all(marker.get(k) == v for k, v in wanted.items())


@contextlib.contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    """Exclusive ``flock`` on ``<folder>.lock`` (beside the folder, never replaced)."""
    lock_path = folder.with_name(folder.name + ".lock")
    with lock_path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _discard(folder: Path) -> None:
    """Move ``folder`` out of the way and delete it (processes that still map its files keep them)."""
    if not folder.exists():
        return
    aside = folder.with_name(f".{folder.name}.stale-{uuid.uuid4().hex[:8]}")
    folder.rename(aside)
    shutil.rmtree(aside, ignore_errors=True)


def _edge_config(dim: int) -> EdgeConfig:
    return EdgeConfig(
        vectors=EdgeVectorParams(size=dim, distance=Distance.Dot),
        hnsw_config=HnswIndexConfig(
            m=HNSW_M,
            ef_construct=HNSW_EF_CONSTRUCT,
            full_scan_threshold=FULL_SCAN_THRESHOLD_KB,
            max_indexing_threads=INDEXING_THREADS,
            payload_m=PAYLOAD_M,
        ),
        optimizers=(
            None
            if INDEXING_THRESHOLD_KB is None
            else EdgeOptimizersConfig(indexing_threshold=INDEXING_THRESHOLD_KB)
        ),
        wal_enabled=False,
    )


def build_shard(
    folder: Path, vectors: np.ndarray, categories: Sequence[Sequence[str]], marker: dict[str, Any]
) -> float:
    """Build the shard of ``vectors`` in ``folder`` (which must not exist); returns the seconds taken.

    Built in a temporary sibling folder, flushed and closed, the marker written last, then renamed.
    Call it under :func:`_exclusive`.
    """
    started = time.perf_counter()
    data = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = data.shape
    for pattern in (f".{folder.name}.building-*", f".{folder.name}.stale-*"):
        for stale in folder.parent.glob(pattern):
            shutil.rmtree(stale, ignore_errors=True)  # left by a build that died (we hold the lock)
    tmp = folder.with_name(f".{folder.name}.building-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        shard = EdgeShard.create(str(tmp), _edge_config(int(dim)))
        try:
            shard.update(UpdateOperation.create_field_index(CATEGORIES, PayloadSchemaType.Keyword))
            for start in range(0, n, UPSERT_BATCH):
                rows = data[start : start + UPSERT_BATCH].tolist()
                points = [
                    Point(start + i, row, {CATEGORIES: [str(c) for c in categories[start + i]]})
                    for i, row in enumerate(rows)
                ]
                shard.update(UpdateOperation.upsert_points(points))
            loaded = time.perf_counter()
            shard.optimize()  # builds the HNSW (segments above the indexing threshold)
            indexed = time.perf_counter()
            shard.flush()
        finally:
            shard.close()
        seconds = time.perf_counter() - started
        done = {**marker, "built_seconds": round(seconds, 3), "built_at": time.time()}
        with (tmp / MARKER).open("w") as fh:
            json.dump(done, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        _discard(folder)
        tmp.rename(folder)
        _fsync_dir(folder.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(
        "edge shard built",
        extra={
            "folder": str(folder),
            "items": n,
            "upsert_s": round(loaded - started, 2),
            "index_s": round(indexed - loaded, 2),
            "total_s": round(seconds, 2),
        },
    )
    return seconds


class EdgeBase:
    """Top-N by dot product over the catalogue with HNSW (Qdrant Edge), rows are catalogue indices."""

    engine = "edge"

    def __init__(self, shard: EdgeShard, folder: Path, count: int, ef: int = SEARCH_EF) -> None:
        self.shard = shard
        self.folder = folder
        self.count = count
        self.ef = ef
        self.build_seconds: float | None = None  # set when this process built the shard

    @classmethod
    def open(
        cls,
        folder: Path,
        vectors: np.ndarray,
        categories: Sequence[Sequence[str]],
        ef: int = SEARCH_EF,
    ) -> EdgeBase:
        """The shard of ``vectors``/``categories`` in ``folder``: reused when its marker matches,
        else built (once across processes, see the module docstring). Blocking: call it off the loop."""
        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        if len(categories) != len(vectors):
            raise ValueError(f"{len(vectors)} vectors but {len(categories)} category lists")
        wanted = fingerprint(vectors, categories)
        built: float | None = None
        with _exclusive(folder):
            if not _matches(read_marker(folder), wanted):
                built = build_shard(folder, vectors, categories, wanted)
            try:
                shard = EdgeShard.load(str(folder))
            except Exception:
                if built is not None:
                    raise
                log.warning("edge shard unreadable, rebuilding", extra={"folder": str(folder)}, exc_info=True)
                built = build_shard(folder, vectors, categories, wanted)
                shard = EdgeShard.load(str(folder))
        base = cls(shard, folder, wanted["n"], ef)
        base.build_seconds = built
        return base

    def _filter(self, exclude: np.ndarray, categories: Sequence[str]) -> Filter | None:
        must: list[Any] = []
        must_not: list[Any] = []
        if categories:
            must.append(FieldCondition(CATEGORIES, match=MatchAny([str(c) for c in categories])))
        if len(exclude):
            rows = np.asarray(exclude, dtype=np.int64)
            rows = rows[(rows >= 0) & (rows < self.count)]
            if len(rows):
                must_not.append(HasIdCondition(set(rows.tolist())))
        if not must and not must_not:
            return None
        return Filter(must=must or None, must_not=must_not or None)

    def search(
        self, vector: np.ndarray, n: int, exclude: np.ndarray, categories: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        if n <= 0 or self.count == 0:
            return EMPTY_ROWS, EMPTY_SCORES
        query = np.asarray(vector, dtype=np.float32).reshape(-1).tolist()
        hits = self.shard.search(
            SearchRequest(
                Query.Nearest(query),
                n,
                filter=self._filter(exclude, categories),
                params=SearchParams(hnsw_ef=max(self.ef, n)),
            )
        )
        rows = np.fromiter((int(h.id) for h in hits), np.int64, len(hits))
        scores = np.fromiter((h.score for h in hits), np.float32, len(hits))
        return rows, scores

    def close(self) -> None:
        """Release the shard (closing flushes unchanged files: under the lock, like loading)."""
        with _exclusive(self.folder):
            self.shard.close()
