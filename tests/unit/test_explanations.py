"""Explanations you can trust (issue 18, part 5): which profile texts ``explain=true`` may return and how
each is labelled, from the profile store's rows through every writer (bundle export, refresh job,
admin route) to the service's profile sources (the bundle with its overlay, Qdrant payloads)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from rec_contract.explanations import explanations, label_of_row, labels_for, shown
from rec_contract.profile_store import write_profile_vectors, write_profiles
from service.profiles import PROFILE_TEXTS, LocalProfiles
from service.schemas import ProfilesUpsertRequest

PASSING = {"source": "llm", "grounding": {"passed": True, "score": 0.9, "grounded_on": ["50", "181"]}}
FAILING = {"source": "llm", "grounding": {"passed": False, "score": 0.2, "reasons": ["invented_title"]}}
FALLBACK = {"source": "extractive", "grounding": {"passed": True, "by_construction": True}}


def _row(entity_id: str, slot: int, text: str, quality: Any, **extra: Any) -> dict[str, Any]:
    fallback = isinstance(quality, dict) and quality.get("source") == "extractive"
    return {
        "entity_type": "user", "entity_id": entity_id, "slot": slot, "text": text, "strategy": "proex",
        "stage": "fallback" if fallback else "original", "model": "extractive" if fallback else "smollm2",
        "prompt_version": "p", "seed": 0, "created_at": "t", "is_fallback": fallback,
        "quality": json.dumps(quality) if isinstance(quality, dict) else quality, "version": "v", **extra,
    }  # fmt: skip


def test_labels_follow_the_grounding_verdict_and_the_source() -> None:
    assert label_of_row(_row("1", 0, "a", PASSING)) == {
        "source": "llm",
        "grounded": True,
        "grounded_on": ["50", "181"],
    }
    assert label_of_row(_row("1", 1, "b", FAILING)) == {"source": "llm", "grounded": False, "grounded_on": []}
    assert label_of_row(_row("1", 2, "c", FALLBACK)) == {
        "source": "extractive",
        "grounded": True,
        "grounded_on": [],
    }


def test_stores_without_verdicts_show_extractive_profiles_and_hide_unchecked_llm_ones() -> None:
    old_llm = label_of_row(_row("1", 0, "a", "{}"))
    assert old_llm == {"source": "llm", "grounded": None, "grounded_on": []} and not shown(old_llm)
    old_fallback = label_of_row({**_row("1", 0, "a", ""), "is_fallback": True})
    assert old_fallback["source"] == "extractive" and shown(old_fallback)
    extractive_store = label_of_row({**_row("1", 0, "a", "{}"), "strategy": "extractive", "model": "x"})
    assert extractive_store["source"] == "extractive" and shown(extractive_store)
    assert label_of_row(_row("1", 0, "a", "not json"))["grounded"] is None  # unreadable: unknown


def test_labels_for_prefers_stored_labels_then_flags_else_unknown() -> None:
    stored = [{"source": "llm", "grounded": True, "grounded_on": [50]}, {"source": "bogus"}]
    assert labels_for(2, stored, [False, True]) == [
        {"source": "llm", "grounded": True, "grounded_on": ["50"]},
        {"source": "extractive", "grounded": True, "grounded_on": []},  # invalid label: from the flag
    ]
    assert labels_for(2, None, None) == [None, None]
    assert labels_for(1, None, [False], "extractive")[0]["source"] == "extractive"
    texts = ["kept", "failed", "unknown"]
    labels = [{"source": "llm", "grounded": True, "grounded_on": ["7"]}, {"source": "llm", "grounded": False}]
    assert explanations(texts, labels) == [{"text": "kept", "source": "llm", "grounded_on": ["7"]}]


def _store(folder: Path) -> Path:
    rows = [
        _row("1", 0, "Loves Star Wars (1977) and Contact (1997).", PASSING),
        _row("1", 1, "Adores The Legend of Zelda (2019).", FAILING),
        _row("2", 0, "User 2 watched 40 movies, mostly Drama.", FALLBACK),
        _row("2", 1, "Enjoys Star Wars (1977).", {**PASSING, "grounding": {"passed": True}}),
        _row("3", 0, "A profile from before the check.", "{}"),
    ]
    write_profiles(folder, rows)
    vectors = [("user", u, np.eye(2, 4, dtype=np.float32)) for u in ("1", "2")]
    write_profile_vectors(folder, [*vectors, ("user", "3", np.eye(1, 4, dtype=np.float32))], "enc", "v")
    return folder


def _bundle_profiles(bundle: Path, overlay: Path) -> LocalProfiles:
    users = {"1": 0, "2": 1, "3": 2}
    return LocalProfiles(bundle, users, {}, k=2, dim=4, overlay_path=overlay)


def test_the_exported_bundle_serves_only_grounded_profiles_with_their_labels(tmp_path: Path) -> None:
    from training.export import _write_profiles

    store = _store(tmp_path / "store")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    vectors = np.zeros((3, 2, 4), np.float32)
    vectors[:, :, 0] = 1.0
    mask = np.array([[True, True], [True, True], [True, False]])
    profiles = SimpleNamespace(
        user_vectors=vectors, user_mask=mask, item_vectors=np.zeros((0, 2, 4)), item_mask=np.zeros((0, 2))
    )
    dataset = SimpleNamespace(user_ids=["1", "2", "3"], item_ids=[])
    _write_profiles(bundle, SimpleNamespace(profiles=profiles, profile_store=store), dataset)  # type: ignore[arg-type]
    written = {json.loads(line)["entity_id"]: json.loads(line) for line in (bundle / PROFILE_TEXTS).open()}
    assert [label["grounded"] for label in written["1"]["labels"]] == [True, False]

    source = _bundle_profiles(bundle, tmp_path / "online" / "profiles-v.jsonl")

    def explain(user: str) -> list[dict[str, Any]]:
        found = asyncio.run(source.get("user", user, texts=True))
        assert found is not None
        return found.explanations()

    assert explain("1") == [
        {"text": "Loves Star Wars (1977) and Contact (1997).", "source": "llm", "grounded_on": ["50", "181"]}
    ]
    assert explain("2") == [
        {"text": "User 2 watched 40 movies, mostly Drama.", "source": "extractive", "grounded_on": []},
        {"text": "Enjoys Star Wars (1977).", "source": "llm", "grounded_on": []},
    ]
    assert explain("3") == []  # an LLM profile never checked is not shown


def test_a_bundle_exported_before_labels_shows_nothing_it_cannot_vouch_for(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    np.save(bundle / "user_profiles.npy", np.ones((3, 2, 4), np.float32))
    np.save(bundle / "user_profile_mask.npy", np.ones((3, 2), bool))
    (bundle / PROFILE_TEXTS).write_text(json.dumps({"entity_type": "user", "entity_id": "1", "texts": ["a"]}))
    found = asyncio.run(_bundle_profiles(bundle, tmp_path / "o.jsonl").get("user", "1", texts=True))
    assert found is not None and found.texts == ["a"] and found.explanations() == []


def test_refreshed_profiles_reach_every_worker_with_their_verdicts(tmp_path: Path) -> None:
    """The refresh job's upsert bodies carry each text's label; the overlay they are written to gives
    every worker the same explanations (a failed profile is never shown)."""
    from offline_jobs.refresh.online import upsert_requests

    store = _store(tmp_path / "store")
    (body,) = upsert_requests(store, {"user": ["1", "2"], "item": []}, "v", batch=10)
    request = ProfilesUpsertRequest(**body)  # what the admin route accepts
    by_id = {p.entity_id: p for p in request.profiles}
    assert by_id["1"].labels is not None and [lab.grounded for lab in by_id["1"].labels] == [True, False]

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    overlay = tmp_path / "online" / "profiles-v.jsonl"
    writer, reader = _bundle_profiles(bundle, overlay), _bundle_profiles(bundle, overlay)
    for entry in request.profiles:
        labels = [lab.model_dump() for lab in entry.labels] if entry.labels else None
        asyncio.run(
            writer.upsert(
                "user", entry.entity_id, np.asarray(entry.vectors), entry.texts, entry.strategy,
                entry.is_fallback, labels,
            )
        )  # fmt: skip
    reader.sync()
    one = asyncio.run(reader.get("user", "1", texts=True))
    assert one is not None and [e["source"] for e in one.explanations()] == ["llm"]
    assert one.explanations()[0]["grounded_on"] == ["50", "181"]
    two = asyncio.run(reader.get("user", "2", texts=True))
    assert two is not None and [e["source"] for e in two.explanations()] == ["extractive", "llm"]
    # an upsert with no labels: a fallback counts as extractive, anything else is unverified
    asyncio.run(
        writer.upsert("user", "3", np.eye(2, 4), ["llm text", "fallback text"], "proex", [False, True])
    )
    reader.sync()
    three = asyncio.run(reader.get("user", "3", texts=True))
    assert three is not None and three.explanations() == [
        {"text": "fallback text", "source": "extractive", "grounded_on": []}
    ]
