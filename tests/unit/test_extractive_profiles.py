"""Extractive profiles: K distinct, deterministic facets from training interactions only."""

from __future__ import annotations

import numpy as np
import pytest

from offline_jobs.context import load_context
from offline_jobs.extractive import ExtractiveProfiler, build_extractive_rows
from rec_contract.profile_store import PROFILE_COLUMNS


@pytest.fixture(scope="module")
def ctx(movielens):
    return load_context(movielens, "random", 2024)


def test_user_profiles_are_distinct_deterministic_facets(ctx):
    profiler = ExtractiveProfiler(ctx)
    first = profiler.user_facets(0, 4)
    again = ExtractiveProfiler(ctx).user_facets(0, 4)
    assert first == again
    texts = [t for _, t in first]
    assert len(texts) == 4 and len(set(texts)) == 4
    assert [f for f, _ in first] == ["overview", "genre_taste", "liked_titles", "recency_and_niche"]
    assert "technician" in texts[0] and "24-year-old" in texts[0]
    # more slots than facets still gives distinct texts
    six = [t for _, t in profiler.user_facets(0, 6)]
    assert len(set(six)) == 6


def test_user_profiles_use_training_items_only(ctx):
    profiler = ExtractiveProfiler(ctx)
    test = ctx.split.test.tocsr()
    train_titles = {ctx.title(int(i)) for i in ctx.user_items(0)}
    test_only = [ctx.title(int(i)) for i in test[0].indices if ctx.title(int(i)) not in train_titles]
    assert test_only
    text = " ".join(t for _, t in profiler.user_facets(0, 8))
    leaked = [t for t in test_only if t in text]
    assert not leaked, f"test items leaked into the user profile: {leaked}"


def test_item_profiles_cover_audience_and_cold_items(ctx):
    profiler = ExtractiveProfiler(ctx)
    toy = [t for _, t in profiler.item_facets(0, 4)]
    assert toy[0].startswith("Toy Story (1995) is an Animation")
    assert "Viewers of Toy Story" in toy[1] and "men" in toy[1]
    assert len(set(toy)) == 4
    cold = int(np.flatnonzero(ctx.item_popularity == 0)[0])
    facets = profiler.item_facets(cold, 4)
    assert facets[1][0] == "similar_items"
    assert len({t for _, t in facets}) == 4


def test_rows_follow_the_store_schema(ctx):
    rows = build_extractive_rows(ctx, 3, "v1", users=[0, 1], items=[5])
    assert len(rows) == 9
    for row in rows:
        assert set(PROFILE_COLUMNS) <= set(row)
        assert row["strategy"] == "extractive" and row["is_fallback"] is False
    assert [r["slot"] for r in rows[:3]] == [0, 1, 2]
    assert rows[0]["stage"] == "original" and rows[1]["stage"] == "new"
