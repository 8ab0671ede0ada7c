"""Crash-safe job state in one SQLite file (WAL mode) under the output folder.

* ``generations``: every LLM output, keyed by sha256 of (messages, model, sampling params incl. seed)
  (:meth:`ChatRequest.cache_key`). A re-run or a run resumed after a crash asks the cache first, so
  nothing that finished is generated again.
* ``entities``: the finished profiles of an entity (validated, with fallbacks and similarities) and
  their vectors, keyed by the run's configuration digest; a resumed run skips these entities.
* ``runs``: one row per run with its counters (generated, cache hits, skipped entities...).

Every write is committed before the caller moves on; a SIGKILL loses at most the batch in flight.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from offline_jobs.llm.base import GenerationResult

CACHE_FILE = "job_cache.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS generations (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    request TEXT NOT NULL,
    text TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    finish_reason TEXT NOT NULL,
    seconds REAL NOT NULL,
    run_id TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS entities (
    config TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    rows TEXT NOT NULL,
    vectors BLOB,
    dim INTEGER,
    run_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (config, entity_type, entity_id)
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    started_at REAL NOT NULL,
    finished_at REAL,
    stats TEXT
);
"""


class JobCache:
    def __init__(self, path: str | Path, run_id: str | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(self.path), timeout=60, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(_SCHEMA)
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.hits = 0
        self.misses = 0
        self.regenerated = 0  # stored keys that were generated again (must stay 0)
        self.conn.execute(
            "INSERT OR REPLACE INTO runs (run_id, started_at) VALUES (?, ?)", (self.run_id, time.time())
        )

    # ------------------------------------------------------------------ generations
    def get_many(self, keys: Sequence[str]) -> dict[str, GenerationResult]:
        found: dict[str, GenerationResult] = {}
        for start in range(0, len(keys), 500):
            chunk = list(keys[start : start + 500])
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(
                "SELECT key, model, text, prompt_tokens, completion_tokens, finish_reason, seconds "
                f"FROM generations WHERE key IN ({marks})",
                chunk,
            ).fetchall()
            for key, model, text, pt, ct, fr, sec in rows:
                found[key] = GenerationResult(
                    text=text,
                    prompt_tokens=pt,
                    completion_tokens=ct,
                    finish_reason=fr,
                    model=model,
                    seconds=sec,
                    cached=True,
                )
        self.hits += len(found)
        self.misses += len(set(keys)) - len(found)
        return found

    def put_many(self, items: Iterable[tuple[str, dict[str, Any], GenerationResult]]) -> None:
        now = time.time()
        rows = [
            (
                key,
                res.model,
                json.dumps(req, ensure_ascii=False),
                res.text,
                res.prompt_tokens,
                res.completion_tokens,
                res.finish_reason,
                res.seconds,
                self.run_id,
                now,
            )
            for key, req, res in items
            if res.finish_reason != "error"  # errors are not cached: a re-run tries again
        ]
        if not rows:
            return
        with self._tx():
            before = self.conn.total_changes
            self.conn.executemany(
                "INSERT OR IGNORE INTO generations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows
            )
            self.regenerated += len(rows) - (self.conn.total_changes - before)

    def count_generations(self, run_id: str | None = None) -> int:
        if run_id is None:
            return int(self.conn.execute("SELECT COUNT(*) FROM generations").fetchone()[0])
        return int(
            self.conn.execute("SELECT COUNT(*) FROM generations WHERE run_id = ?", (run_id,)).fetchone()[0]
        )

    # ------------------------------------------------------------------ finished entities
    def done_keys(self, config: str) -> set[tuple[str, str]]:
        rows = self.conn.execute("SELECT entity_type, entity_id FROM entities WHERE config = ?", (config,))
        return {(t, i) for t, i in rows.fetchall()}

    def put_entity(
        self,
        config: str,
        entity_type: str,
        entity_id: str,
        rows: list[dict[str, Any]],
        vectors: np.ndarray | None,
    ) -> None:
        blob = None if vectors is None else np.ascontiguousarray(vectors, dtype=np.float32).tobytes()
        dim = None if vectors is None else int(vectors.shape[1])
        with self._tx():
            self.conn.execute(
                "INSERT OR REPLACE INTO entities VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    config,
                    entity_type,
                    entity_id,
                    json.dumps(rows, default=str),
                    blob,
                    dim,
                    self.run_id,
                    time.time(),
                ),
            )

    def get_entities(
        self, config: str, entity_type: str | None = None
    ) -> list[tuple[str, str, list[dict[str, Any]], np.ndarray | None]]:
        sql = "SELECT entity_type, entity_id, rows, vectors, dim FROM entities WHERE config = ?"
        args: list[Any] = [config]
        if entity_type:
            sql += " AND entity_type = ?"
            args.append(entity_type)
        out = []
        for et, eid, rows, blob, dim in self.conn.execute(sql, args).fetchall():
            vecs = None
            if blob is not None and dim:
                vecs = np.frombuffer(blob, dtype=np.float32).reshape(-1, dim).copy()
            out.append((et, eid, json.loads(rows), vecs))
        return out

    # ------------------------------------------------------------------ runs
    def finish_run(self, stats: dict[str, Any]) -> None:
        self.conn.execute(
            "UPDATE runs SET finished_at = ?, stats = ? WHERE run_id = ?",
            (time.time(), json.dumps(stats, default=str), self.run_id),
        )

    def runs(self) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT run_id, started_at, finished_at, stats FROM runs ORDER BY started_at"
        )
        return [
            {"run_id": r, "started_at": s, "finished_at": f, "stats": json.loads(st) if st else None}
            for r, s, f, st in rows.fetchall()
        ]

    def prune(self, max_age_s: float) -> dict[str, int]:
        """Forget what is older than ``max_age_s`` (generations, finished entities, runs): a cache that
        lives across runs (the refresh's) keeps what recent prompts may ask again, not everything."""
        cutoff = time.time() - max_age_s
        deleted: dict[str, int] = {}
        with self._tx():
            for table, column in (
                ("generations", "created_at"),
                ("entities", "created_at"),
                ("runs", "started_at"),
            ):
                cursor = self.conn.execute(f"DELETE FROM {table} WHERE {column} < ?", (cutoff,))
                deleted[table] = cursor.rowcount
        return deleted

    def _tx(self) -> _Transaction:
        return _Transaction(self.conn)

    def close(self) -> None:
        self.conn.close()


class _Transaction:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
