"""What an extractive profile is grounded on (issue 18, part 5): the history items a user's extractive
profile names, the items an item's profile names; recorded in the rows the extractive store and the
generation job's fallbacks write, and read back as explanation labels."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from offline_jobs.context import load_context
from offline_jobs.profiles.extractive import ExtractiveProfiler, build_extractive_rows
from offline_jobs.profiles.extractive_grounding import grounded_on, named_items
from rec_contract.explanations import label_of_row, shown


@pytest.fixture(scope="module")
def ctx(movielens):
    return load_context(movielens, "random", 2024)


@pytest.fixture(scope="module")
def profiler(ctx):
    return ExtractiveProfiler(ctx)


def test_a_users_profiles_are_grounded_on_the_history_items_they_name(ctx, profiler):
    history = {int(i) for i in ctx.user_items(0)}
    facets = [text for _, text in profiler.user_facets(0, 4)]
    on = [grounded_on(profiler, "user", 0, text) for text in facets]
    named = set().union(*map(set, on))
    assert named and named <= history
    for text, items in zip(facets, on, strict=True):
        assert all(profiler.item_label(i) in text for i in items)
        # every history title the text spells out is found
        assert {i for i in history if profiler.item_label(i) in text} == set(items)
    assert on[1] == []  # the genre-taste facet names no title


def test_an_items_profile_is_grounded_on_itself_and_the_items_it_names(ctx, profiler):
    item = 0
    texts = [text for _, text in profiler.item_facets(item, 4)]
    assert grounded_on(profiler, "item", item, texts[0])[0] == item  # the overview names the item
    also = grounded_on(profiler, "item", item, texts[2])  # "viewers also watched"
    assert len(also) >= 2 and all(profiler.item_label(i) in texts[2] for i in also)


def test_a_title_inside_a_longer_title_at_the_same_place_does_not_count():
    titles = ["Alien (1979)", "Aliens (1986)", "Heat (1995)", "Alien (1979) (Director's Cut)"]
    profiler = SimpleNamespace(item_label=lambda i: titles[i])
    text = "Favourites: Alien (1979) (Director's Cut); Heat (1995); Aliens (1986); Heat (1995)."
    assert named_items(profiler, text, range(4)) == [3, 2, 1]  # type: ignore[arg-type]
    assert named_items(profiler, "Liked Alien (1979).", range(4)) == [0]  # type: ignore[arg-type]
    assert named_items(profiler, "Liked nothing.", range(4)) == []  # type: ignore[arg-type]


def test_extractive_store_rows_carry_source_and_grounded_items(ctx):
    rows = build_extractive_rows(ctx, 4, "v1", users=[0, 1], items=[0])
    labels = [label_of_row({**r, "quality": json.dumps(r["quality"])}) for r in rows]
    assert all(lab["source"] == "extractive" and shown(lab) for lab in labels)
    user_ids = {str(ctx.dataset.user_ids[u]): u for u in (0, 1)}
    for row, lab in zip(rows, labels, strict=True):
        if row["entity_type"] != "user":
            continue
        history = {str(ctx.dataset.item_ids[i]) for i in ctx.user_items(user_ids[row["entity_id"]])}
        assert set(lab["grounded_on"]) <= history
    overview = [lab for row, lab in zip(rows, labels, strict=True) if row["slot"] == 0]
    assert all(lab["grounded_on"] for lab in overview)  # every overview names favourites / the item
