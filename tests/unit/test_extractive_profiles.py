"""Extractive profiles: K distinct, deterministic facets from training interactions only, for every
user (also one without attributes) and item."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from offline_jobs.context import attribute_text, load_context
from offline_jobs.failures import EntityFailure
from offline_jobs.profiles.entity_text import EntityText
from offline_jobs.profiles.extractive import ExtractiveProfiler, build_extractive_rows
from offline_jobs.refresh.live_data import apply_logs
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


def test_attribute_values_read_as_text_and_missing_ones_are_none():
    assert attribute_text(24.0) == attribute_text(np.float64(24.0)) == attribute_text(np.int64(24)) == "24"
    assert attribute_text(24.5) == "24.5" and attribute_text(" student ") == "student"
    for missing in (None, float("nan"), np.nan, pd.NA, "", "  ", "nan", [1]):
        assert attribute_text(missing) is None, missing


def test_a_new_user_without_attributes_leaves_every_profile_buildable(movielens):
    """A new user has no attributes: the age column turns float (24 -> 24.0) and gender/occupation
    get NaN; profiles of known users read as before, the new user's leave the attributes out."""
    live, _ = apply_logs(movielens, [{"user_id": "newbie", "item_id": "50", "type": "like"}], [])
    assert live.users is not None and live.users["age"].dtype.kind == "f"  # the trigger of the defect
    ctx = load_context(live, "random", 2024)
    profiler = ExtractiveProfiler(ctx)
    assert "User 1 is a 24-year-old man working as a technician" in profiler.user_facets(0, 4)[0][1]
    newbie = live.user_index()["newbie"]
    text = " ".join(t for _, t in profiler.user_facets(newbie, 4))
    assert text.startswith("User newbie is a user who watched 1 movie.")
    assert not re.search(r"\bnan\b", text, re.I) and "rater" not in text  # no rating is known
    audience = profiler.item_facets(live.item_index()["50"], 4)[1][1]
    assert re.search(r"age mostly \d+-\d+", audience) and not re.search(r"\bnan\b", audience, re.I)
    texts = EntityText(ctx)
    assert texts.who(0) == ", a 24-year-old man working as a technician" and texts.who(newbie) == ""
    assert "technician" in texts.user_vocab(0) and "star" in texts.user_vocab(newbie)


def test_rows_leave_out_a_failing_entity_when_failures_are_collected(ctx, monkeypatch):
    original = ExtractiveProfiler.user_facets

    def failing(self, user, k):
        if user == 1:
            raise ValueError("invalid literal for int() with base 10: '24.0'")
        return original(self, user, k)

    monkeypatch.setattr(ExtractiveProfiler, "user_facets", failing)
    with pytest.raises(ValueError):
        build_extractive_rows(ctx, 2, "v1", users=[0, 1], items=[5])
    failures: list[EntityFailure] = []
    rows = build_extractive_rows(ctx, 2, "v1", users=[0, 1], items=[5], failures=failures)
    assert {(r["entity_type"], r["entity_id"]) for r in rows} == {("user", "1"), ("item", "6")}
    [failure] = failures
    assert (failure.entity_type, failure.entity_id, failure.stage) == ("user", "2", "extractive")
    assert failure.reason == "ValueError: invalid literal for int() with base 10: '24.0'"
    assert failure.where.startswith("tests/unit/test_extractive_profiles.py:") and "failing" in failure.where
    assert "Traceback" in failure.traceback
