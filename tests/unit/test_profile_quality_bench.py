"""benchmarks.profile_quality's figures on a hand-made store (first-attempt hallucinations, category
precision with fallbacks grounded by construction, resumable parts) and the leave-one-in utility
(benchmarks.profile_utility: each profile slot alone through a fused Mult-VAE)."""

from __future__ import annotations

import json

import pytest

from benchmarks.profile_quality import _first_attempt, measure, shards
from benchmarks.profile_utility import UtilityOptions, leave_one_in, slot_inputs, variants
from offline_jobs.context import load_context
from offline_jobs.jobs.embedding import embed_profile_rows
from offline_jobs.profiles.extractive import build_extractive_rows
from rec_contract.profile_store import write_profile_vectors, write_profiles
from tests.unit._fakes import HashEmbedder
from training.profiles import load_profile_inputs


@pytest.fixture(scope="module")
def ctx(movielens):
    return load_context(movielens, "random", 2024)


def _store(ctx, folder, users, items, k=2, edit=None):
    rows = build_extractive_rows(ctx, k, "t1", users=users, items=items)
    for row in rows:
        if edit is not None:
            edit(row)
        row["quality"] = json.dumps(row["quality"])
    write_profiles(folder, rows)
    entries = embed_profile_rows(rows, HashEmbedder())
    write_profile_vectors(folder, entries, HashEmbedder.model_id, "t1")
    return rows


def test_first_attempt_reads_the_rejection_record():
    assert _first_attempt({"attempts": 1}) == (True, False)
    assert _first_attempt({"attempts": 2, "rejected": [["invented_title", "echo"]]}) == (False, True)
    assert _first_attempt({"attempts": 3, "rejected": [["echo"], ["ungrounded_title"]]}) == (False, False)


def test_measure_counts_kept_llm_profiles_and_first_attempts(ctx, tmp_path):
    history = ctx.user_items(0)
    outside = next(i for i in range(ctx.dataset.n_items) if i not in set(history.tolist()))
    real = ctx.title(int(history[0])).split(" (")[0]
    invented = ctx.title(int(outside))

    def edit(row):
        if row["entity_type"] != "user" or row["entity_id"] != str(ctx.dataset.user_ids[0]):
            return
        quality = row["quality"]
        if row["slot"] == 0:  # an LLM profile that passed on its second attempt
            row.update(text=f'They loved "{real}" and many dramas.', is_fallback=False, model="smollm2")
            quality.update(source="llm", attempts=2, rejected=[["invented_title"]])
        else:  # a kept LLM profile naming a title outside the history (the check off)
            row.update(text=f'They loved "{invented}".', is_fallback=False, model="smollm2")
            quality.update(source="llm", attempts=1)

    _store(ctx, tmp_path / "a", [0], [], edit=edit)
    _store(ctx, tmp_path / "b", [1], [3])  # extractive rows only: grounded by construction
    figures = measure([tmp_path / "a", tmp_path / "b"], ctx)
    assert figures["profiles"] == 6
    assert figures["hallucinated_rate"] == round(1 / 6, 4)
    assert figures["hallucinated_before"] == 0.5 and figures["first_pass"] == 0.5
    assert figures["fallback_rate"] == 0.0  # deliberate extractive rows are not fallbacks
    assert figures["category_precision_all"] <= 1.0


def test_shards_split_the_sample_in_contiguous_parts():
    assert shards([1, 2, 3, 4, 5], 2) == [[1, 2, 3], [4, 5]]
    assert shards([1, 2], 3) == [[1], [2], []]


def test_leave_one_in_trains_base_each_slot_alone_and_all(ctx, tmp_path, data_dir):
    _store(ctx, tmp_path, list(range(30)), list(range(30)))
    full = load_profile_inputs(tmp_path, ctx.dataset, 2)
    one = slot_inputs(full, 1)
    assert one.k == 1 and (one.user_vectors[:, 0] == full.user_vectors[:, 1]).all()
    assert [label for label, _ in variants(2)] == ["base", "slot0 (original)", "slot1", "all"]
    rows = leave_one_in(
        tmp_path, 2, "movielens-100k", UtilityOptions(epochs=2, eval_every=1, patience=1), data_dir
    )
    assert [r["profiles"] for r in rows] == ["base", "slot0 (original)", "slot1", "all"]
    for row in rows:
        assert 0.0 < row["valid_r20"] <= 1.0 and 0.0 < row["valid_r20_profiled"] <= 1.0
        assert row["epochs_run"] <= 2
    assert all("vs_base_profiled" in r for r in rows[1:])
