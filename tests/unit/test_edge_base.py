"""EdgeBase (service/stores/edge.py): Qdrant Edge's HNSW as the catalogue base of the embedded store,
against the exact numpy base, and its shard folder shared by several processes."""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("qdrant_edge")

from service.stores import edge
from service.stores.edge import MARKER, EdgeBase
from service.stores.local import ExactBase

N_ITEMS = 2_000
DIM = 16
N_CATEGORIES = 20


def catalogue(seed: int = 0, n: int = N_ITEMS, dim: int = DIM) -> tuple[np.ndarray, list[list[str]]]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dim), dtype=np.float32)
    categories = [
        [f"cat{c}" for c in rng.choice(N_CATEGORIES, int(rng.integers(1, 4)), replace=False)]
        for _ in range(n)
    ]
    return vectors, categories


Case = tuple[np.ndarray, np.ndarray, list[str]]


def queries(count: int, n: int, dim: int = DIM, seed: int = 1) -> list[Case]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        vector = rng.standard_normal(dim).astype(np.float32)
        exclude = rng.choice(n, 100, replace=False).astype(np.int64) if i % 2 else np.zeros(0, np.int64)
        cats = [f"cat{c}" for c in rng.choice(N_CATEGORIES, int(rng.integers(1, 3)), replace=False)]
        out.append((vector, exclude, cats if i % 3 else []))
    return out


def recall(base: EdgeBase, exact: ExactBase, cases: list[Case]) -> float:
    found = []
    for vector, exclude, cats in cases:
        want, _ = exact.search(vector, 20, exclude, cats)
        got, _ = base.search(vector, 20, exclude, cats)
        found.append(len(set(want.tolist()) & set(got.tolist())) / max(1, len(want)))
    return float(np.mean(found))


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, list[list[str]]]:
    return catalogue()


@pytest.fixture(scope="module")
def opened(tmp_path_factory, data) -> Iterator[EdgeBase]:
    vectors, categories = data
    base = EdgeBase.open(tmp_path_factory.mktemp("edge") / "edge-v1", vectors, categories)
    yield base
    base.close()


def test_same_top20_as_exact(opened: EdgeBase, data) -> None:
    vectors, categories = data
    exact = ExactBase(vectors, categories)
    assert opened.engine == "edge"
    for vector, exclude, cats in queries(40, N_ITEMS):
        want, want_scores = exact.search(vector, 20, exclude, cats)
        got, got_scores = opened.search(vector, 20, exclude, cats)
        assert got.dtype == np.int64 and got_scores.dtype == np.float32
        assert len(got) == 20
        # small catalogue: below the indexing threshold, the shard is scored exactly
        assert got.tolist() == want.tolist()
        np.testing.assert_allclose(got_scores, want_scores, rtol=1e-5, atol=1e-5)
        assert np.all(np.diff(got_scores) <= 0)  # best first


def test_honours_exclusions_and_any_of_categories(opened: EdgeBase, data) -> None:
    vectors, categories = data
    rng = np.random.default_rng(7)
    for _ in range(20):
        vector = rng.standard_normal(DIM).astype(np.float32)
        unfiltered, _ = opened.search(vector, 20, np.zeros(0, np.int64), [])
        exclude = unfiltered[::2]  # the best ones: they would be in the answer otherwise
        rows, _ = opened.search(vector, 20, exclude, [])
        assert len(rows) == 20 and not set(rows.tolist()) & set(exclude.tolist())
        wanted = ["cat3", "cat11"]
        rows, scores = opened.search(vector, 20, exclude, wanted)
        assert len(rows) == 20
        assert all(set(categories[r]) & set(wanted) for r in rows.tolist())
        assert not set(rows.tolist()) & set(exclude.tolist())
        np.testing.assert_allclose(scores, vectors[rows] @ vector, rtol=1e-5, atol=1e-5)
    # an unknown category matches nothing; n larger than what passes the filter
    assert len(opened.search(vectors[0], 20, np.zeros(0, np.int64), ["no-such-category"])[0]) == 0
    only = [r for r, cats in enumerate(categories) if "cat5" in cats]
    rows, _ = opened.search(vectors[0], len(only) + 50, np.zeros(0, np.int64), ["cat5"])
    assert sorted(rows.tolist()) == only
    # out-of-range exclusions are ignored, n=0 answers nothing
    rows, _ = opened.search(vectors[0], 5, np.array([-1, N_ITEMS + 10], np.int64), [])
    assert len(rows) == 5
    assert len(opened.search(vectors[0], 0, np.zeros(0, np.int64), [])[0]) == 0


def test_hnsw_path_recall(tmp_path: Path, monkeypatch) -> None:
    """With the indexing and full-scan thresholds lowered the shard is an HNSW graph (with per-category
    links) even at a few thousand items, and filters are applied in the graph traversal: recall@20
    against the exact base stays >= 0.95 with exclusions and category filters."""
    monkeypatch.setattr(edge, "INDEXING_THRESHOLD_KB", 1)
    monkeypatch.setattr(edge, "FULL_SCAN_THRESHOLD_KB", 1)
    vectors, categories = catalogue(seed=3, n=4_000)
    base = EdgeBase.open(tmp_path / "edge-hnsw", vectors, categories)
    try:
        assert base.shard.info().indexed_vectors_count >= 4_000
        assert recall(base, ExactBase(vectors, categories), queries(60, 4_000, seed=4)) >= 0.95
    finally:
        base.close()


def test_reuses_a_built_folder_and_rebuilds_other_data(tmp_path: Path, data) -> None:
    vectors, categories = data
    folder = tmp_path / "edge-v1"
    first = EdgeBase.open(folder, vectors, categories)
    assert first.build_seconds is not None
    marker = json.loads((folder / MARKER).read_text())
    assert marker["n"] == N_ITEMS and marker["d"] == DIM
    first.close()
    again = EdgeBase.open(folder, vectors, categories)
    assert again.build_seconds is None  # reused, not rebuilt
    assert json.loads((folder / MARKER).read_text())["built_at"] == marker["built_at"]
    probe = vectors[11]
    assert again.search(probe, 1, np.zeros(0, np.int64), [])[0].tolist() == [int(np.argmax(vectors @ probe))]
    again.close()
    # other vectors (or other categories) in the same folder: rebuilt, never served stale
    other_vectors = vectors.copy()
    other_vectors[11] *= -1
    rebuilt = EdgeBase.open(folder, other_vectors, categories)
    assert rebuilt.build_seconds is not None
    assert rebuilt.search(probe, 1, np.zeros(0, np.int64), [])[0].tolist() == [
        int(np.argmax(other_vectors @ probe))
    ]
    rebuilt.close()
    recategorised = [list(c) for c in categories]
    recategorised[0] = ["brand-new"]
    base = EdgeBase.open(folder, other_vectors, recategorised)
    assert base.build_seconds is not None
    assert base.search(probe, 5, np.zeros(0, np.int64), ["brand-new"])[0].tolist() == [0]
    base.close()
    assert not list(tmp_path.glob(".edge-v1.*"))  # no temporary or stale folder left behind


def test_incomplete_folder_is_rebuilt(tmp_path: Path, data) -> None:
    vectors, categories = data
    folder = tmp_path / "edge-v1"
    folder.mkdir()
    (folder / "edge_config.json").write_text("{}")  # a build that died before its marker
    (tmp_path / ".edge-v1.building-1-dead").mkdir()
    base = EdgeBase.open(folder, vectors, categories)
    assert base.build_seconds is not None
    assert (folder / MARKER).exists()
    assert len(base.search(vectors[0], 20, np.zeros(0, np.int64), [])[0]) == 20
    base.close()
    assert not list(tmp_path.glob(".edge-v1.*"))


def _worker(folder: str, barrier, out) -> None:  # runs in a spawned process
    vectors, categories = catalogue()
    exact = ExactBase(vectors, categories)
    barrier.wait()  # start together
    base = EdgeBase.open(Path(folder), vectors, categories)
    barrier.wait()  # both hold the shard now
    cases = queries(20, N_ITEMS, seed=9)
    ok = all(
        base.search(v, 20, ex, cats)[0].tolist() == exact.search(v, 20, ex, cats)[0].tolist()
        for v, ex, cats in cases
    )
    out.put((base.build_seconds is not None, ok))
    barrier.wait()
    base.close()


def test_two_processes_open_one_folder(tmp_path: Path) -> None:
    """Two workers starting together: one builds, the other waits on the lock and loads the same
    folder (WAL disabled), and both search correctly."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2, timeout=120)
    out = ctx.Queue()
    folder = str(tmp_path / "edge-shared")
    procs = [ctx.Process(target=_worker, args=(folder, barrier, out)) for _ in range(2)]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    assert sorted(built for built, _ in results) == [False, True]  # built once
    assert all(ok for _, ok in results)
    # and a third opener (this process) reuses it while nothing else holds it
    vectors, categories = catalogue()
    base = EdgeBase.open(Path(folder), vectors, categories)
    assert base.build_seconds is None
    base.close()
