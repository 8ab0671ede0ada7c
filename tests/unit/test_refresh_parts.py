"""Parts of the daily refresh that need no deployment: log records that cannot be used, the run folders
kept, the generation settings sized for the changed entities, the inputs digest, and the metrics
stating what the last run did."""

from __future__ import annotations

import os
from pathlib import Path

from offline_jobs.refresh.job import _inputs_digest, _job_settings, _new_run_folder, write_metrics
from offline_jobs.refresh.live_data import apply_logs, changes_of
from offline_jobs.refresh.state import RUNS_KEPT, RefreshReport, RefreshState
from offline_jobs.settings import JobSettings

BAD_FEEDBACK = [
    {"item_id": "50", "type": "like"},  # no user
    {"user_id": "", "item_id": "50", "type": "like"},
    {"user_id": "7", "item_id": None, "type": "like"},
    {"user_id": "7", "item_id": "50", "type": "rating", "value": "five"},
]
BAD_CATALOG = [
    {"type": "item_upsert", "title": "no id"},
    {"type": "item_upsert", "item_id": "x", "categories": "Drama"},
]


def test_unusable_log_records_are_counted_and_skipped_not_fatal(movielens) -> None:
    feedback = [*BAD_FEEDBACK, {"user_id": "newbie", "item_id": "50", "type": "like"}]
    catalog = [*BAD_CATALOG, {"type": "item_upsert", "item_id": "new-1", "title": None, "text": None}]
    changes = changes_of(feedback, catalog)
    assert changes.users == {"newbie"} and changes.items == {"50", "new-1"}
    assert changes.counts["invalid_feedback"] == 4 and changes.counts["invalid_catalog"] == 2
    live, counts = apply_logs(movielens, feedback, catalog)
    assert counts["invalid"] == 6 and counts["interactions_added"] == 1 and counts["items_added"] == 1
    new_item = live.item_index()["new-1"]
    assert live.items["title"].iloc[new_item] == "new-1" and live.items["description"].iloc[new_item] == ""


def test_a_new_run_folder_keeps_only_the_newest_few(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    old = [
        runs / "f0-120_c0-0",
        runs / "f120-240_c0-0",
        runs / "20260101T000000-1",
        runs / "20260102T000000-1",
    ]
    for age, folder in enumerate(reversed(old)):  # the offset-named folders of before are the oldest
        folder.mkdir(parents=True)
        os.utime(folder, (1_000_000 - age, 1_000_000 - age))
    new = _new_run_folder(tmp_path)
    assert new.is_dir() and new.parent == runs
    kept = sorted(p.name for p in runs.iterdir())
    assert len(kept) == RUNS_KEPT and new.name in kept
    assert not any(name.startswith("f") for name in kept)


def test_the_generation_batch_is_sized_for_the_changed_entities() -> None:
    default = JobSettings().llama_batch_seqs
    assert _job_settings(1, 4).llama_batch_seqs == 4  # one entity: a KV cache of 10 slots, not 160
    assert _job_settings(3, 2).llama_batch_seqs == 6
    assert _job_settings(10_000, 4).llama_batch_seqs == default


def test_the_inputs_digest_follows_item_text_and_user_attributes(movielens) -> None:
    base = _inputs_digest(movielens)
    assert _inputs_digest(movielens) == base
    edited, _ = apply_logs(
        movielens, [], [{"type": "item_upsert", "item_id": "50", "title": "Star Wars", "text": "x"}]
    )
    assert edited.fingerprint() == movielens.fingerprint()  # the dataset fingerprint does not see it
    assert _inputs_digest(edited) != base


def test_metrics_state_what_the_last_run_did(tmp_path: Path) -> None:
    state = RefreshState(entities_total=5, failures_total=1, quarantined_total=3)
    report = RefreshReport(
        status="partial", users=["newbie"], items=["50", "181"], quarantined=[{"entity_id": "7"}]
    )
    path = tmp_path / "refresh.prom"
    write_metrics(path, state, report)
    lines = dict(
        line.rsplit(" ", 1) for line in path.read_text().splitlines() if line and not line.startswith("#")
    )
    assert float(lines["profilerec_refresh_last_run_entities"]) == 3
    assert float(lines["profilerec_refresh_last_run_quarantined"]) == 1
    assert float(lines["profilerec_refresh_last_run_failed"]) == 0
    assert float(lines["profilerec_refresh_entities_total"]) == 5
    assert float(lines["profilerec_refresh_quarantined_total"]) == 3
    assert float(lines["profilerec_refresh_failures_total"]) == 1


def test_a_refreshed_profile_that_fails_never_replaces_a_good_one(tmp_path):
    """Slot 0: the live LLM profile passed the check, the refresh fell back: the live one stays. Slot 1:
    the live profile was a fallback: the refreshed one replaces it. Another entity is untouched."""
    import json

    import numpy as np

    from offline_jobs.refresh.job import keep_good_profiles
    from rec_contract.profile_store import (
        read_profiles,
        read_store_vectors,
        write_profile_vectors,
        write_profiles,
    )

    def row(slot, text, fallback, passed=None):
        quality = {} if passed is None else {"grounding": {"passed": passed}}
        return {
            "entity_type": "user", "entity_id": "7", "slot": slot, "text": text, "strategy": "proex",
            "stage": "fallback" if fallback else "original", "model": "m", "prompt_version": "p", "seed": 0,
            "created_at": "t", "is_fallback": fallback, "quality": json.dumps(quality), "version": "v",
        }  # fmt: skip

    live, work = tmp_path / "live", tmp_path / "work"
    write_profiles(live, [row(0, "good old", False, True), row(1, "old fallback", True)])
    write_profile_vectors(live, [("user", "7", np.ones((2, 3), np.float32))], "e", "v")
    write_profiles(work, [row(0, "new fallback", True), row(1, "new fallback 2", True)])
    write_profile_vectors(work, [("user", "7", np.zeros((2, 3), np.float32))], "e", "v")
    assert keep_good_profiles(live, work) == 1
    texts = {r["slot"]: r["text"] for r in read_profiles(work)}
    assert texts == {0: "good old", 1: "new fallback 2"}
    ((_, _, vectors),) = read_store_vectors(work)[0]
    assert vectors[0].tolist() == [1, 1, 1] and vectors[1].tolist() == [0, 0, 0]
    assert json.loads(read_profiles(work)[0]["quality"])["kept_over_refresh"] is True
    assert keep_good_profiles(live, work) == 0  # nothing left to keep: slot 0 is no fallback now
