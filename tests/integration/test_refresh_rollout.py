"""Daily refresh and rollout against a real deployment copy: real redis-server, real embedded Qdrant,
real profile generation, the real service (in-process and over HTTP)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient
from qdrant_client import QdrantClient

from offline_jobs.jobs.cache import CACHE_FILE, JobCache
from offline_jobs.publish.promote import rollback
from offline_jobs.publish.rollout import gate
from offline_jobs.refresh.job import refresh_lock, run_refresh
from offline_jobs.refresh.state import (
    CRASH_ENV,
    EXIT_LOCKED,
    RUNS_KEPT,
    RefreshFailedError,
    RefreshLockedError,
)
from rec_contract.bundle import promote, read_manifest, resolve_pointer, seal_manifest
from rec_contract.event_log import append_events
from rec_contract.naming import generation_key, point_id
from rec_contract.profile_store import read_profiles
from service.app import create_app
from tests.integration.conftest import KEYS
from training.data import split_dataset

pytestmark = pytest.mark.integration

STORE_VERSION = "it-store-1"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _user_texts(store: Path) -> dict[str, list[str]]:
    out: dict[str, dict[int, str]] = {}
    for row in read_profiles(store):
        if row["entity_type"] == "user":
            out.setdefault(row["entity_id"], {})[int(row["slot"])] = row["text"]
    return {u: [slots[s] for s in sorted(slots)] for u, slots in out.items()}


def _served_texts(live_env, user: str) -> list[str]:
    """The profile texts the (embedded) service serves for a user now."""
    with TestClient(create_app(live_env.service_settings()), headers=KEYS) as client:
        return client.get(f"/v1/users/{user}/recommendations?n=1&explain=true").json()["user_profiles"]


def _qdrant_texts(qdrant_path: Path, entity_type: str, ids: list[str]) -> dict[str, list[str]]:
    client = QdrantClient(path=str(qdrant_path))
    try:
        records = client.retrieve(
            f"profiles_{STORE_VERSION}", [point_id(entity_type, i) for i in ids], with_payload=True
        )
        return {r.payload["entity_id"]: r.payload["texts"] for r in records}
    finally:
        client.close()


def _unseen_popular(artefacts, user: int, n: int) -> list[str]:
    split = split_dataset(artefacts.dataset, "random", seed=2024)
    seen = set(artefacts.dataset.item[artefacts.dataset.user == user].tolist())
    popular = np.argsort(-np.asarray(split.train.sum(axis=0)).ravel())
    return [str(artefacts.dataset.item_ids[i]) for i in popular if i not in seen][:n]


def test_refresh_changes_exactly_the_users_with_new_feedback(artefacts, live_env, monkeypatch) -> None:
    monkeypatch.setenv("PROFILEREC_MAX_TOKENS", "48")
    targets = [1, 2, 3]  # dense user indices (all have profiles in the store)
    controls = [4, 5]
    raw = {u: str(artefacts.dataset.user_ids[u]) for u in targets + controls}
    new_items = {u: _unseen_popular(artefacts, u, 2) for u in targets}
    with TestClient(create_app(live_env.service_settings()), headers=KEYS) as client:
        before = {
            u: client.get(f"/v1/users/{raw[u]}/recommendations?n=10&explain=true").json()
            for u in targets + controls
        }
        events = [{"user_id": raw[u], "item_id": i, "type": "like"} for u in targets for i in new_items[u]]
        assert client.post("/v1/feedback", json=events).json() == {"accepted": len(events)}
    cache = redis.Redis.from_url(live_env.redis_url)
    keys = {u: generation_key("user", raw[u]) for u in targets + controls}
    tokens = {u: cache.get(k) for u, k in keys.items()}
    assert all(tokens.values())  # every user vector was cached by the requests, under a token
    store_before = _user_texts(live_env.store)

    report = run_refresh(live_env.refresh_settings())

    assert report.status == "refreshed"
    assert sorted(report.users) == sorted(raw[u] for u in targets)
    assert sorted(report.items) == sorted({i for u in targets for i in new_items[u]})
    assert report.writes["path"] == "in-process" and report.writes["invalidated"] >= len(targets)
    store_after = _user_texts(live_env.store)
    for u in targets:  # regenerated: new texts in the store, cached vectors invalidated (new token)
        assert store_after[raw[u]] != store_before[raw[u]]
        assert cache.get(keys[u]) != tokens[u]
    for u in controls:  # untouched
        assert store_after[raw[u]] == store_before[raw[u]]
        assert cache.get(keys[u]) == tokens[u]
    rows = [
        r
        for r in read_profiles(live_env.store)
        if r["entity_id"] == raw[targets[0]] and r["entity_type"] == "user"
    ]
    assert {r["strategy"] for r in rows} == {"proex"} and all(r["model"] for r in rows)

    with TestClient(create_app(live_env.service_settings()), headers=KEYS) as client:
        for u in targets:
            after = client.get(f"/v1/users/{raw[u]}/recommendations?n=10&explain=true").json()
            assert after["user_profiles"] == store_after[raw[u]]  # served from the refreshed profiles
            assert after["items"] != before[u]["items"]
            assert not set(new_items[u]) & {
                i["item_id"] for i in after["items"]
            }  # the new items are seen now
        # a control user's profiles are untouched (its ranking may move: the refreshed items changed)
        control = client.get(f"/v1/users/{raw[controls[0]]}/recommendations?n=10&explain=true").json()
        assert control["user_profiles"] == before[controls[0]]["user_profiles"]

    # A second run finds nothing new and changes nothing.
    digest = _digest(live_env.store / "profiles.parquet")
    again = run_refresh(live_env.refresh_settings())
    assert again.status == "noop" and again.users == [] and again.items == []
    assert _digest(live_env.store / "profiles.parquet") == digest
    state = json.loads((live_env.root / "work" / "refresh" / "state.json").read_text())
    assert state["feedback_offset"] == live_env.feedback_log.stat().st_size
    metrics = (live_env.root / "work" / "metrics" / "refresh.prom").read_text()
    assert "profilerec_refresh_last_success_timestamp_seconds" in metrics
    assert "profilerec_refresh_entities_total" in metrics


def _refresh_subprocess(live_env, extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        **live_env.env(),
        "PROFILEREC_REFRESH_STRATEGY": "proex",
        "PROFILEREC_MAX_TOKENS": "40",
        **extra_env,
    }
    return subprocess.run(
        [sys.executable, "-m", "offline_jobs.cli.jobs", "refresh"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_refresh_killed_after_upsert_recovers_without_regenerating(artefacts, live_env) -> None:
    user = str(artefacts.dataset.user_ids[7])
    append_events(live_env.feedback_log, [{"user_id": user, "item_id": "50", "type": "click"}])
    crashed = _refresh_subprocess(live_env, {"PROFILEREC_REFRESH_CRASH_AFTER": "upsert"})
    assert crashed.returncode == 137, crashed.stderr[-2000:]
    state_path = live_env.root / "work" / "refresh" / "state.json"
    assert not state_path.exists() or json.loads(state_path.read_text())["feedback_offset"] == 0
    written = _served_texts(live_env, user)
    assert written == _user_texts(live_env.store)[user]  # the upsert happened before the crash

    resumed = _refresh_subprocess(live_env, {})
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    report = json.loads((live_env.root / "work" / "refresh" / "last_report.json").read_text())
    assert report["status"] == "refreshed" and report["users"] == [user]
    stats = report["generation"]["stats"]
    # nothing regenerated: the finished entities come from the job cache
    assert stats["generated"] == 0 and stats["entities_skipped"] + stats["cache_hits"] > 0
    assert json.loads(state_path.read_text())["feedback_offset"] == live_env.feedback_log.stat().st_size
    assert _served_texts(live_env, user) == written
    assert _refresh_subprocess(live_env, {}).returncode == 0
    assert (
        json.loads((live_env.root / "work" / "refresh" / "last_report.json").read_text())["status"] == "noop"
    )


def test_refresh_takes_a_lock(live_env) -> None:
    settings = live_env.refresh_settings()
    with refresh_lock(settings.state_dir / "refresh.lock"):
        with pytest.raises(RefreshLockedError):
            run_refresh(settings)
        assert _refresh_subprocess(live_env, {}).returncode == EXIT_LOCKED


def test_refresh_goes_through_the_service_that_owns_the_embedded_storage(
    artefacts, live_env, free_port: int
) -> None:
    from tests.integration.conftest import ThreadedServer

    user = str(artefacts.dataset.user_ids[9])
    # engine qdrant on a path: qdrant-client's local mode, which the service process locks
    with ThreadedServer(create_app(live_env.service_settings(engine="qdrant")), free_port) as server:
        import httpx

        before = httpx.get(
            headers=KEYS, url=f"{server.url}/v1/users/{user}/recommendations?n=5&explain=true"
        ).json()
        httpx.post(
            headers=KEYS,
            url=f"{server.url}/v1/feedback",
            json=[{"user_id": user, "item_id": "100", "type": "like"}],
        )
        report = run_refresh(live_env.refresh_settings(service_url=server.url, refresh_strategy="extractive"))
        assert report.writes["path"].startswith("service ")
        after = httpx.get(
            headers=KEYS, url=f"{server.url}/v1/users/{user}/recommendations?n=5&explain=true"
        ).json()
    assert after["user_profiles"] != before["user_profiles"]
    assert after["user_profiles"] == _user_texts(live_env.store)[user]
    assert _qdrant_texts(live_env.qdrant_path, "user", [user])[user] == after["user_profiles"]


def _bad_copy(bundle: Path, version: str) -> Path:
    """A copy of a bundle whose item vectors are shuffled: a much worse model, correctly sealed."""
    target = bundle.parent / version
    shutil.copytree(bundle, target)
    vectors = np.load(target / "item_vectors.npy")
    np.save(target / "item_vectors.npy", np.random.default_rng(0).permutation(vectors))
    manifest = read_manifest(target).model_copy(
        update={"bundle_version": version, "items_collection": f"items_{version}"}
    )
    seal_manifest(target, manifest)
    return target


def test_gate_refuses_a_worse_candidate(artefacts, live_env) -> None:
    split = split_dataset(artefacts.dataset, "random", seed=2024)
    worse = _bad_copy(live_env.bundle, "it-worse-1")
    refused = gate(live_env.bundle, worse, artefacts.dataset, split, tolerance=0.005)
    assert not refused.passed and refused.candidate < refused.live
    same = gate(live_env.bundle, live_env.bundle, artefacts.dataset, split, tolerance=0.0)
    assert same.passed and same.candidate == pytest.approx(same.live)
    # the exported artefacts score like the trained model: the gate's live figure is the run's own
    run_metrics = json.loads((artefacts.runs["lightgcn"] / "metrics.json").read_text())
    assert same.live == pytest.approx(run_metrics["valid"]["recall@20"], abs=1e-6)


def test_retrain_refuses_a_candidate_that_trails_ease(artefacts, live_env, data_dir: Path) -> None:
    from offline_jobs.publish.rollout import PromotionRefusedError, RetrainOptions, retrain

    work = live_env.root / "work"
    options = RetrainOptions(
        bundles_root=live_env.bundles_root,
        work_dir=work,
        text_encoder_dir=artefacts.text_encoder,
        feedback_log=live_env.feedback_log,
        catalog_log=live_env.catalog_log,
        tolerance=1.0,  # the live-model gate passes: only EASE can refuse
        epochs=1,
        eval_every=1,
        data_dir=data_dir,
        profile_store=live_env.store,
        promote=False,
        max_gap_to_ease=0.0,
    )
    with pytest.raises(PromotionRefusedError, match="trails EASE"):
        retrain(options)
    assert resolve_pointer(live_env.bundles_root) == live_env.bundle  # still live
    (report_file,) = (work / "rollouts").iterdir()
    report = json.loads(report_file.read_text())
    versus = report["vs_ease"]
    assert versus["model"] == report["gate"]["candidate"] and versus["ease"] > versus["model"]
    assert not versus["passed"] and versus["max_gap"] == 0.0


def test_promotion_under_load_fails_no_request_and_rollback_restores(
    artefacts, live_env, free_port: int
) -> None:
    from tests.integration.conftest import ThreadedServer
    from training.export import ExportOptions, export_bundle

    users = [str(artefacts.dataset.user_ids[u]) for u in range(10, 16)]
    candidate = export_bundle(
        artefacts.runs["multvae"],
        ExportOptions(
            bundles_root=live_env.bundles_root, text_encoder_dir=artefacts.text_encoder, version="it-v2"
        ),
    )
    v1 = live_env.bundle.name
    outcomes: list[tuple[int, str | None, str, list[str]]] = []  # status, model version, user, item ids
    stop = threading.Event()

    def client_loop(url: str) -> None:
        import httpx

        with httpx.Client(base_url=url, timeout=30) as http:
            while not stop.is_set():
                for user in users:
                    response = http.get(f"/v1/users/{user}/recommendations?n=10")
                    ok = response.status_code == 200
                    body = response.json() if ok else {}
                    items = [i["item_id"] for i in body.get("items", [])]
                    outcomes.append((response.status_code, body.get("model_version"), user, items))
                    time.sleep(0.005)  # a steady client, leaving the loader thread some CPU on 2 cores

    def wait_for(version: str, after: int = 0) -> int:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if len(outcomes) > after and outcomes[-1][1] == version:
                return len(outcomes)
            time.sleep(0.05)
        raise AssertionError(f"the service never served {version}")

    with ThreadedServer(create_app(live_env.service_settings(reload_interval_s=0.2)), free_port) as server:
        worker = threading.Thread(target=client_loop, args=(server.url,), daemon=True)
        worker.start()
        wait_for(v1)
        while len({o[2] for o in outcomes if o[1] == v1}) < len(users):
            time.sleep(0.05)
        promote(
            live_env.bundles_root, candidate.name
        )  # what `profilerec-pipeline publish` does with the service up
        mark = wait_for(candidate.name)
        time.sleep(0.5)
        rollback(live_env.bundles_root)  # `profilerec-pipeline rollback`
        mark = wait_for(v1, mark)
        while len(outcomes) < mark + 2 * len(users):
            time.sleep(0.05)
        stop.set()
        worker.join(timeout=30)
    assert outcomes and all(o[0] == 200 for o in outcomes), sorted({o[0] for o in outcomes})
    assert {v1, candidate.name} <= {o[1] for o in outcomes}
    assert resolve_pointer(live_env.bundles_root).name == v1
    first = {}
    for _, version, user, items in outcomes:
        if version == v1:
            first.setdefault(user, items)
    after_rollback = [o for o in outcomes[mark:]]
    assert after_rollback and all(o[1] == v1 for o in after_rollback)
    assert all(items == first[user] for _, _, user, items in after_rollback)  # the previous answers are back


# ---------------------------------------------------------------------- issue 15: realistic traffic
def _prom(path: Path) -> dict[str, float]:
    lines = [line.rsplit(" ", 1) for line in path.read_text().splitlines() if line and line[0] != "#"]
    return {name: float(value) for name, value in lines}


def test_refresh_quarantines_a_failing_entity_and_a_bad_record_and_refreshes_the_others(
    artefacts, live_env, monkeypatch
) -> None:
    """A new user (no attributes: the age column turns float) no longer stops the refresh; an entity
    whose profile fails and a record the live data cannot use are set aside, the others refreshed,
    the watermarks moved, and the report and metrics say so."""
    from offline_jobs.profiles.extractive import ExtractiveProfiler

    known, broken = (str(artefacts.dataset.user_ids[u]) for u in (3, 5))
    append_events(
        live_env.feedback_log,
        [
            {"user_id": "newbie", "item_id": "50", "type": "like"},
            {"user_id": known, "item_id": "181", "type": "like"},
            {"user_id": broken, "item_id": "100", "type": "like"},
            {"item_id": "50", "type": "like"},  # no user: a record nobody can use
        ],
    )
    original = ExtractiveProfiler.user_facets

    def failing(self, user, k):
        if str(self.ctx.dataset.user_ids[user]) == broken:
            raise KeyError("occupation")
        return original(self, user, k)

    monkeypatch.setattr(ExtractiveProfiler, "user_facets", failing)
    settings = live_env.refresh_settings(refresh_strategy="extractive")

    report = run_refresh(settings)

    assert report.status == "partial"
    assert sorted(report.users) == sorted(["newbie", known]) and sorted(report.items) == ["100", "181", "50"]
    quarantined = {(q["entity_type"], q["entity_id"]): q for q in report.quarantined}
    assert set(quarantined) == {("user", broken), ("feedback_event", "")}
    entity = quarantined[("user", broken)]
    assert entity["stage"] == "extractive" and entity["reason"] == "KeyError: 'occupation'"
    assert entity["where"].startswith("tests/integration/test_refresh_rollout.py:")
    assert "Traceback" in entity["traceback"] and "failing" in entity["traceback"]
    record = quarantined[("feedback_event", "")]
    assert record["stage"] == "read_logs" and record["where"] == str(live_env.feedback_log)
    assert "user_id" in record["reason"] and record["record"] == {"item_id": "50", "type": "like"}

    dead = [json.loads(line) for line in (settings.state_dir / "dead_letter.jsonl").read_text().splitlines()]
    assert sorted((d["entity_type"], d["entity_id"], d["stage"]) for d in dead) == [
        ("feedback_event", "", "read_logs"),
        ("user", broken, "extractive"),
    ]
    assert all(d["reason"] for d in dead)
    on_disk = json.loads((settings.state_dir / "last_report.json").read_text())
    assert on_disk["status"] == "partial" and on_disk["users"] == report.users
    assert {q["entity_id"] for q in on_disk["quarantined"]} == {broken, ""}
    state = json.loads((settings.state_dir / "state.json").read_text())
    assert state["feedback_offset"] == live_env.feedback_log.stat().st_size  # the watermarks moved
    metrics = _prom(live_env.root / "work" / "metrics" / "refresh.prom")
    assert metrics["profilerec_refresh_last_run_entities"] == 5  # refreshed, not planned (6)
    assert metrics["profilerec_refresh_last_run_quarantined"] == 2
    assert metrics["profilerec_refresh_last_run_failed"] == 0

    texts = _user_texts(live_env.store)
    assert texts["newbie"][0].startswith("User newbie is a user who watched 1 movie.")
    assert re.search(r"is an? \d+-year-old", texts[known][0]) and ".0-year-old" not in texts[known][0]
    assert broken not in texts or texts[broken] == _user_texts(artefacts.store).get(broken)  # untouched

    again = run_refresh(settings)  # nothing new: a no-op that quarantines nothing again
    assert again.status == "noop" and again.quarantined == []
    assert len((settings.state_dir / "dead_letter.jsonl").read_text().splitlines()) == 2


def test_a_refresh_that_fails_names_the_stage_and_keeps_the_watermarks(live_env, tmp_path) -> None:
    append_events(live_env.feedback_log, [{"user_id": "newbie", "item_id": "50", "type": "like"}])
    settings = live_env.refresh_settings(bundles_root=tmp_path / "no-bundles")
    with pytest.raises(
        RefreshFailedError, match=r"refresh failed at stage bundle \(rec_contract/bundle\.py:"
    ):
        run_refresh(settings)
    report = json.loads((settings.state_dir / "last_report.json").read_text())
    assert report["status"] == "failed" and report["failed_stage"] == "bundle"
    assert "no such bundle pointer" in report["error"] and "Traceback" in report["traceback"]
    assert report["users"] == [] and report["items"] == []  # nothing was done
    assert json.loads((settings.state_dir / "state.json").read_text())["feedback_offset"] == 0
    metrics = _prom(live_env.root / "work" / "metrics" / "refresh.prom")
    assert metrics["profilerec_refresh_last_run_failed"] == 1
    assert metrics["profilerec_refresh_last_run_entities"] == 0


def test_refresh_rerun_after_a_kill_and_a_new_event_answers_the_killed_run_from_the_cache(
    artefacts, live_env
) -> None:
    """The generation cache is keyed by what is generated, not by log offsets: an event arriving
    between a killed run and its rerun leaves every generation of the killed run reusable."""
    fake = {"PROFILEREC_LLM_BACKEND": "fake"}
    state_dir = live_env.root / "work" / "refresh"
    for n in range(3):  # run folders named after log offsets, left by the refresh of before
        legacy = state_dir / "runs" / f"f{n}-{n + 1}_c0-0"
        legacy.mkdir(parents=True)
        os.utime(legacy, (n + 1, n + 1))
    user = str(artefacts.dataset.user_ids[7])
    append_events(live_env.feedback_log, [{"user_id": user, "item_id": "50", "type": "click"}])
    crashed = _refresh_subprocess(live_env, {**fake, CRASH_ENV: "generate"})
    assert crashed.returncode == 137, crashed.stderr[-2000:]
    cache_path = state_dir / "cache" / CACHE_FILE
    cache = JobCache(cache_path)
    killed = cache.count_generations()
    cache.close()
    assert killed > 0

    append_events(live_env.feedback_log, [{"user_id": "newbie", "item_id": "181", "type": "like"}])
    resumed = _refresh_subprocess(live_env, fake)

    assert resumed.returncode == 0, resumed.stderr[-2000:]
    report = json.loads((state_dir / "last_report.json").read_text())
    assert report["status"] == "refreshed"
    assert sorted(report["users"]) == sorted([user, "newbie"]) and report["items"] == ["181", "50"]
    stats = report["generation"]["stats"]
    assert stats["cache_hits"] >= killed and stats["cache_regenerated"] == 0  # the killed run's answers
    cache = JobCache(cache_path)
    assert stats["generated"] == cache.count_generations() - killed  # only the new prompts generated
    cache.close()
    runs = sorted(p.name for p in (state_dir / "runs").iterdir())
    assert len(runs) == RUNS_KEPT and "f0-1_c0-0" not in runs  # the oldest folders are gone
    assert Path(report["run_folder"]).name in runs
