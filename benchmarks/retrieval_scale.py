"""Retrieval latency against catalogue size: the engines the embedded store can use, at 10k-1M items.

Float32 vectors of dim 64 (the demo's): i.i.d. Gaussian (``--data random``, the default: no structure,
the worst case for a graph index) or clustered around 1,000 centres (``--data clustered``, closer to
trained embeddings); ``--categories`` random categories with 1-3 per item. Each
query is a top-20 by dot product with an exclusion list of 100 random items and a filter on 1-2 random
categories (any-of), the shape of a recommendation request. Engines:

* ``qdrant-local``: qdrant-client's local mode in memory (``location=":memory:"``), brute force in
  pure Python; skipped at a size where its estimated time (extrapolated from the previous size)
  exceeds ``--client-budget``;
* ``exact``: ``service.stores.local.ExactBase``, one numpy matrix-vector product with integer masks;
* ``edge``: ``service.stores.edge.EdgeBase``, Qdrant's engine in-process (HNSW), at each ``--ef``.

Figures per engine and size: build time (for ``edge`` the whole ``EdgeBase.open`` of a new folder:
hashing, upserts, HNSW build, load; and ``reopen_s``, what a second worker pays to reuse the shard),
p50/p99/mean latency in ms over ``--queries`` queries after ``--warmup``, and recall@20 against
``exact``. The exact product runs with numpy's BLAS threads as configured and again limited to one
thread (on a busy two-core machine a second BLAS thread waits for a core: several ms per product).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.results import print_table, record
from service.stores.local import ExactBase

DIM = 64
TOP = 20
EXCLUDED = 100
ENGINES = ("qdrant-local", "exact", "edge")
DATA = ("random", "clustered")
CENTRES = 1_000

Query = tuple[np.ndarray, np.ndarray, list[str]]
Search = Callable[[np.ndarray, np.ndarray, list[str]], np.ndarray]


def make_vectors(rng: np.random.Generator, n: int, dim: int, data: str) -> np.ndarray:
    """``random``: i.i.d. standard normal (no structure: the hardest case for a graph index);
    ``clustered``: around 1,000 fixed random centres with spread 0.5 (closer to trained embeddings)."""
    if data == "random":
        return rng.standard_normal((n, dim), dtype=np.float32)
    centres = np.random.default_rng(12345).standard_normal((CENTRES, dim), dtype=np.float32)
    noise = rng.standard_normal((n, dim), dtype=np.float32)
    return np.asarray(centres[rng.integers(0, CENTRES, n)] + 0.5 * noise, dtype=np.float32)


def make_catalogue(
    n: int, dim: int, n_categories: int, seed: int, data: str = "random"
) -> tuple[np.ndarray, list[list[str]]]:
    rng = np.random.default_rng(seed)
    vectors = make_vectors(rng, n, dim, data)
    names = np.array([f"cat{c:02d}" for c in range(n_categories)], dtype=object)
    # 1-3 distinct categories per item: the first k of a random order of the categories
    order = np.argsort(rng.random((n, n_categories), dtype=np.float32), axis=1)[:, :3]
    counts = rng.integers(1, 4, n)
    categories = [names[row[:k]].tolist() for row, k in zip(order, counts.tolist(), strict=True)]
    return vectors, categories


def make_queries(
    count: int, n: int, dim: int, n_categories: int, seed: int, data: str = "random"
) -> list[Query]:
    rng = np.random.default_rng(seed)
    vectors = make_vectors(rng, count, dim, data)
    out = []
    for vector in vectors:
        exclude = rng.choice(n, min(EXCLUDED, n), replace=False).astype(np.int64)
        picks = rng.choice(n_categories, int(rng.integers(1, 3)), replace=False)
        out.append((vector, exclude, [f"cat{c:02d}" for c in picks]))
    return out


def timed(search: Search, queries: Sequence[Query], warmup: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Latencies (ms) of the queries after ``warmup`` of them, and every answer."""
    answers = []
    latencies = []
    for i, (vector, exclude, cats) in enumerate(queries):
        started = time.perf_counter()
        rows = search(vector, exclude, cats)
        elapsed = time.perf_counter() - started
        answers.append(np.asarray(rows, np.int64))
        if i >= warmup:
            latencies.append(elapsed * 1000)
    return np.asarray(latencies), answers


def recall_at(answers: list[np.ndarray], truth: list[np.ndarray]) -> float:
    found = [
        len(set(a.tolist()) & set(t.tolist())) / max(1, len(t)) for a, t in zip(answers, truth, strict=True)
    ]
    return float(np.mean(found))


def row(engine: str, n: int, **values: Any) -> dict[str, Any]:
    base = {
        "engine": engine,
        "items": n,
        "build_s": "",
        "reopen_s": "",
        "p50_ms": "",
        "p99_ms": "",
        "mean_ms": "",
        "recall@20": "",
        "queries": "",
        "note": "",
    }
    base.update(values)
    return base


def blas_threads() -> int | None:
    """Threads of numpy's BLAS (None without threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover - service-only install
        return None
    counts = [int(i["num_threads"]) for i in threadpool_info() if i.get("user_api") == "blas"]
    return max(counts) if counts else None


def latency_figures(latencies: np.ndarray) -> dict[str, float]:
    return {
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "mean_ms": float(latencies.mean()),
        "queries": len(latencies),
    }


class QdrantLocal:
    """qdrant-client local mode in memory, with the service's filter shape."""

    def __init__(self, vectors: np.ndarray, categories: list[list[str]]) -> None:
        from qdrant_client import QdrantClient, models

        self.models = models
        self.client = QdrantClient(location=":memory:")
        self.client.create_collection(
            "items",
            vectors_config=models.VectorParams(size=int(vectors.shape[1]), distance=models.Distance.DOT),
        )
        batch = 5_000
        for start in range(0, len(vectors), batch):
            rows = vectors[start : start + batch]
            self.client.upsert(
                "items",
                points=[
                    models.PointStruct(id=start + i, vector=v, payload={"categories": categories[start + i]})
                    for i, v in enumerate(rows.tolist())
                ],
                wait=True,
            )

    def search(self, vector: np.ndarray, exclude: np.ndarray, cats: list[str]) -> np.ndarray:
        m = self.models
        flt = m.Filter(
            must=[m.FieldCondition(key="categories", match=m.MatchAny(any=cats))],
            must_not=[m.HasIdCondition(has_id=exclude.tolist())],
        )
        hits = self.client.query_points(
            "items", query=vector.tolist(), limit=TOP, query_filter=flt, with_payload=False
        ).points
        return np.fromiter((int(h.id) for h in hits), np.int64, len(hits))

    def close(self) -> None:
        self.client.close()


def searcher(base: Any, n: int = TOP) -> Search:
    """``base.search`` (a ``BaseIndex``) as rows only."""

    def search(vector: np.ndarray, exclude: np.ndarray, cats: list[str]) -> np.ndarray:
        return np.asarray(base.search(vector, n, exclude, cats)[0])

    return search


def run_exact(
    n: int, exact: ExactBase, build: float, queries: list[Query], warmup: int
) -> list[dict[str, Any]]:
    lat, _ = timed(searcher(exact), queries, warmup)
    blas = blas_threads()
    note = f"BLAS threads: {blas}" if blas else ""
    rows = [row("exact", n, build_s=build, **latency_figures(lat), **{"recall@20": 1.0}, note=note)]
    if blas and blas > 1:
        # the same product on one BLAS thread: on a busy machine a second thread waits for a core
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            lat, _ = timed(searcher(exact), queries, warmup)
        rows.append(row("exact", n, **latency_figures(lat), **{"recall@20": 1.0}, note="BLAS threads: 1"))
    return rows


def run_edge(
    n: int,
    vectors: np.ndarray,
    categories: list[list[str]],
    folder: Path,
    efs: list[int],
    queries: list[Query],
    truth: list[np.ndarray],
    warmup: int,
) -> list[dict[str, Any]]:
    from service.stores.edge import SEARCH_EF, EdgeBase

    started = time.perf_counter()
    base = EdgeBase.open(folder, vectors, categories)
    build = time.perf_counter() - started
    note = "" if base.build_seconds is not None else "shard reused from --workdir"
    base.close()
    started = time.perf_counter()
    base = EdgeBase.open(folder, vectors, categories)  # what a second worker process pays
    reopen = time.perf_counter() - started
    rows = []
    try:
        for ef in efs or [SEARCH_EF]:
            base.ef = ef
            lat, answers = timed(searcher(base), queries, warmup)
            rows.append(
                row(
                    f"edge ef={ef}",
                    n,
                    build_s=build,
                    reopen_s=reopen,
                    **latency_figures(lat),
                    **{"recall@20": recall_at(answers, truth)},
                    note=note,
                )
            )
            print_table(rows[-1:])
    finally:
        base.close()
    return rows


def run_client(
    n: int,
    vectors: np.ndarray,
    categories: list[list[str]],
    queries: list[Query],
    truth: list[np.ndarray],
    warmup: int,
    budget: float,
    cost: tuple[float, float] | None,
) -> tuple[dict[str, Any], tuple[float, float] | None]:
    """qdrant-local at ``n`` items within ``budget`` seconds, from the ``cost`` per item (build, one
    query) measured at a smaller size: fewer queries, or skipped. Returns the row and the new cost."""
    measured = len(queries) - warmup
    count, warm = measured, warmup
    if cost is not None:  # brute force: build and queries linear in the items
        fit = int((budget - cost[0] * n) / (cost[1] * n)) - min(warmup, 5)
        if fit < measured:
            count, warm = fit, min(warmup, 5)
        if count < min(30, measured):
            estimate = cost[0] * n + cost[1] * n * len(queries)
            note = f"skipped: estimated {estimate:.0f} s (> {budget:.0f} s budget)"
            return row("qdrant-local", n, note=note), cost
    started = time.perf_counter()
    client = QdrantLocal(vectors, categories)
    build = time.perf_counter() - started
    chosen = slice(warmup - warm, warmup + count)
    try:
        lat, answers = timed(client.search, queries[chosen], warm)
    finally:
        client.close()
    note = "" if count == measured else f"{count} queries to fit the budget"
    figures = {**latency_figures(lat), "recall@20": recall_at(answers, truth[chosen])}
    return row("qdrant-local", n, build_s=build, **figures, note=note), (
        build / n,
        float(lat.mean()) / 1000 / n,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated item counts")
    parser.add_argument("--queries", type=int, default=300, help="measured queries per engine and size")
    parser.add_argument("--warmup", type=int, default=30, help="unmeasured warm-up queries")
    parser.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated, of {ENGINES}")
    parser.add_argument("--dim", type=int, default=DIM, help="vector dimension of the synthetic catalogue")
    parser.add_argument(
        "--categories",
        type=int,
        default=20,
        help="categories of the synthetic catalogue (for filtered queries)",
    )
    parser.add_argument("--data", choices=DATA, default="random", help=make_vectors.__doc__)
    parser.add_argument("--ef", default="", help="edge search ef values (default: EdgeBase's)")
    parser.add_argument(
        "--client-budget",
        type=float,
        default=150.0,
        help="seconds qdrant-local may take at one size (build + queries, estimated from the size before)",
    )
    parser.add_argument("--workdir", default="", help="keep edge shards here (default: a temporary folder)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the catalogue and queries")
    parser.add_argument("--note", default="", help="recorded with the figures (e.g. what else ran)")
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(",") if s.strip())
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = set(engines) - set(ENGINES)
    if unknown:
        parser.error(f"unknown engines {sorted(unknown)}: choose from {ENGINES}")
    efs = [int(e) for e in args.ef.split(",") if e.strip()]

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="retrieval_scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    client_cost: tuple[float, float] | None = None
    try:
        for n in sizes:
            vectors, categories = make_catalogue(n, args.dim, args.categories, args.seed, args.data)
            queries = make_queries(
                args.warmup + args.queries, n, args.dim, args.categories, args.seed + 1, args.data
            )
            started = time.perf_counter()
            exact = ExactBase(vectors, categories)
            exact_build = time.perf_counter() - started
            _, truth = timed(searcher(exact), queries, args.warmup)  # also warms the product up
            if "exact" in engines:
                for line in run_exact(n, exact, exact_build, queries, args.warmup):
                    rows.append(line)
                    print_table([line])
            if "edge" in engines:
                folder = workdir / f"edge-{args.data}-{n}-{args.dim}-{args.seed}"
                rows += run_edge(n, vectors, categories, folder, efs, queries, truth, args.warmup)
                if not args.workdir:
                    shutil.rmtree(folder, ignore_errors=True)
            if "qdrant-local" in engines:
                line, client_cost = run_client(
                    n, vectors, categories, queries, truth, args.warmup, args.client_budget, client_cost
                )
                rows.append(line)
                print_table([line])
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    load_after = os.getloadavg()
    title = (
        f"Top-{TOP} with {EXCLUDED} exclusions and a 1-2 category filter, "
        f"{args.data} vectors of dim {args.dim}"
    )
    print_table(rows, title)
    params = {
        "sizes": sizes,
        "queries": args.queries,
        "warmup": args.warmup,
        "engines": engines,
        "dim": args.dim,
        "categories": args.categories,
        "data": args.data,
        "ef": efs,
        "client_budget_s": args.client_budget,
        "seed": args.seed,
    }
    if args.note:
        params["note"] = args.note
    figures = {
        "table": rows,
        "loadavg_1m_before": round(load_before[0], 2),
        "loadavg_1m_after": round(load_after[0], 2),
    }
    record("retrieval_scale", figures, params)


if __name__ == "__main__":
    main()
