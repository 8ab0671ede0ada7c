"""The ``refresh_kills`` part of ``python -m benchmarks resilience``: the daily refresh
(``profilerec-jobs refresh``, as ``python -m offline_jobs.cli refresh``) SIGKILLed at seeded random
moments; each rerun must converge to what one uninterrupted run leaves.

1. The starting state: the service (Qdrant engine, qdrant-client local mode on the deployment's
   embedded storage, one worker) takes a seeded day of API writes: positive and negative feedback from
   known users and new users, new items and edits of catalogue items (PUT); one unusable record (a
   rating whose value is not a number) is appended to the feedback log, so the quarantine path is part of the
   run. The service is stopped: the state is the deployment's work dir.
2. The reference: a copy of the state, one refresh run to the end (its wall time ``T``), then a
   second run (which must be a no-op).
3. Until ``kills`` runs were SIGKILLed (at most ``2 * kills`` attempts: on a shared machine a run may
   end before its moment): a fresh copy of the state, a refresh SIGKILLed at a seeded moment, then a
   rerun to the end. The moment is drawn uniformly over the reference run's time, as a stage (weighted
   by its duration in the reference) and a point inside it, and is timed from the moment the killed run
   logs that stage: on a shared machine a run's speed varies, so a wall-clock offset from the start
   would often fall after the end (the last stage it logged is where it was).

After each rerun the state is compared with the reference: the profile store (every row and text but
``created_at``; the vectors, to 1e-5), the watermarks (the log offsets in ``refresh/state.json``), the
dead-letter entries (but their timestamps), and every point of every Qdrant collection (ids, payloads
but ``updated_at``, vectors to 1e-5). Nothing may differ.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.day_in_the_life import ADMIN_KEY, API_KEY, GENRE_WORDS, Deployment
from benchmarks.fault_stack import KEYS, Catalogue, Service
from rec_contract.event_log import append_events
from rec_contract.profile_store import read_profiles, read_store_vectors

VOLATILE_ROW = ("created_at",)  # when a profile was written: differs between any two runs
VOLATILE_PAYLOAD = ("updated_at",)
VOLATILE_DEAD_LETTER = ("at", "run_started_at", "traceback")
STAGE_LINE = re.compile(r"refresh stage (\w+)")
ATOL = 1e-5


# ---------------------------------------------------------------------- the starting state
def seed_day(
    deployment: Deployment, seed: int = 0, known_users: int = 12, new_users: int = 4
) -> dict[str, int]:
    """Write a seeded day of API traffic into the deployment through the service (engine ``qdrant`` on
    its embedded storage), then one unusable feedback record straight into the log."""
    rng = random.Random(seed)
    catalogue = Catalogue.of(deployment)
    top = catalogue.items[:400]
    counts: Counter[str] = Counter()
    service = Service(deployment, 1, "", engine="qdrant", reload_interval_s="0")
    with service.running(), httpx.Client(base_url=service.url, headers=KEYS, timeout=60) as client:

        def send(method: str, path: str, body: Any) -> None:
            answer = client.request(method, path, json=body)
            if answer.status_code >= 300:
                raise RuntimeError(f"{method} {path}: {answer.status_code} {answer.text[:300]}")
            counts[f"{method} {path.split('/')[2]}"] += 1

        users = rng.sample(catalogue.users, known_users) + [f"rk-new-{seed}-{i}" for i in range(new_users)]
        for user in users:
            events = []
            for item in rng.sample(top, rng.randint(2, 5)):
                kind = rng.choice(["like", "click", "purchase", "rating", "dislike"])
                event: dict[str, Any] = {"user_id": user, "item_id": item, "type": kind}
                if kind == "rating":
                    event["value"] = float(rng.choice([2, 4, 5]))
                events.append(event)
            send("POST", "/v1/feedback", events)
        genres = sorted(GENRE_WORDS)
        for i in range(4):  # new items
            genre = rng.choice(genres)
            body = {
                "title": f"Refresh kill item {seed}-{i}",
                "categories": [genre],
                "text": GENRE_WORDS[genre],
            }
            send("PUT", f"/v1/items/rk-item-{seed}-{i}", body)
            liker = f"rk-new-{seed}-{i % new_users}"
            send(
                "POST", "/v1/feedback", [{"user_id": liker, "item_id": f"rk-item-{seed}-{i}", "type": "like"}]
            )
        for item in rng.sample(catalogue.items[400:], 3):  # catalogue edits
            genre = rng.choice(genres)
            body = {"title": f"Edited {item}", "categories": [genre], "text": f"now: {GENRE_WORDS[genre]}"}
            send("PUT", f"/v1/items/{item}", body)
    append_events(
        deployment.feedback_log,
        [
            {
                "user_id": "rk-bad",
                "item_id": top[0],
                "type": "rating",
                "value": "five",
                "timestamp": "2026-01-01T00:00:00+00:00",
            }
        ],
    )
    counts["unusable feedback record"] += 1
    return dict(counts)


def copy_state(deployment: Deployment, dest: Path) -> Deployment:
    """A copy of the deployment's work dir (bundles and the text encoder are linked: read only)."""
    work = dest / "work"
    work.mkdir(parents=True)
    for entry in deployment.work_dir.iterdir():
        if entry.name in ("bundles", "text_encoder"):
            (work / entry.name).symlink_to(entry.resolve())
        elif entry.is_dir():
            shutil.copytree(entry, work / entry.name, symlinks=True, ignore=shutil.ignore_patterns(".lock"))
        else:
            shutil.copy2(entry, work / entry.name)
    store = work / deployment.store.relative_to(deployment.work_dir)
    return Deployment(dest, work, store, deployment.data_dir)


# ---------------------------------------------------------------------- one refresh run
@dataclass
class Run:
    code: int  # exit code; -9 when SIGKILLed
    seconds: float
    stages: list[str]  # the stages it logged, in order
    stderr: str

    @property
    def killed(self) -> bool:
        return self.code == -signal.SIGKILL


@dataclass(frozen=True)
class KillPoint:
    """Kill ``after_s`` seconds after the run logs ``stage`` (``stage`` None: after its start)."""

    stage: str | None
    after_s: float


def draw_kill_point(rng: random.Random, durations: dict[str, float]) -> KillPoint:
    """A moment uniform over a reference run's stages (weighted by their durations), inside one."""
    stages = [(name, seconds) for name, seconds in durations.items() if seconds > 0]
    if not stages:
        return KillPoint(None, 0.0)
    name, seconds = rng.choices(stages, weights=[s for _, s in stages])[0]
    return KillPoint(name, rng.uniform(0.02, 0.98) * seconds)


def _wait_for_stage(proc: subprocess.Popen[bytes], err_path: Path, stage: str, timeout: float) -> bool:
    """Wait until the run logs ``stage`` (True) or ends (False)."""
    needle = f"refresh stage {stage}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in err_path.read_text(errors="replace"):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    return False


def run_refresh(
    deployment: Deployment, strategy: str, kill: KillPoint | None = None, timeout: float = 900
) -> Run:
    """``python -m offline_jobs.cli refresh`` on the deployment (no Redis, Qdrant local mode, nothing
    serving), SIGKILLed at ``kill`` if given and still running."""
    env = {
        **deployment.env("", "http://127.0.0.1:9"),
        "PROFILEREC_ENGINE": "qdrant",
        "PROFILEREC_REFRESH_STRATEGY": strategy,
        "PROFILEREC_LOG_FORMAT": "text",
        "PROFILEREC_LOG_LEVEL": "INFO",
        "PROFILEREC_ADMIN_API_KEY": ADMIN_KEY,
        "PROFILEREC_API_KEY": API_KEY,
    }
    err_path = deployment.root / f"refresh-{time.monotonic_ns()}.err"
    started = time.monotonic()
    with err_path.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "offline_jobs.cli", "refresh"],
            env=env,
            cwd=deployment.root,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
        wait = timeout
        if kill is not None:
            logged = kill.stage is None or _wait_for_stage(proc, err_path, kill.stage, timeout)
            wait = kill.after_s if logged else 0.0
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    seconds = time.monotonic() - started
    stderr = err_path.read_text(errors="replace")
    return Run(proc.returncode, seconds, STAGE_LINE.findall(stderr), stderr)


# ---------------------------------------------------------------------- the state compared
def snapshot(deployment: Deployment) -> dict[str, Any]:
    """What a refresh leaves: store rows and vectors, watermarks, dead letters, Qdrant points."""
    from qdrant_client import QdrantClient

    rows = {
        (str(r["entity_type"]), str(r["entity_id"]), int(r["slot"])): {
            k: (json.dumps(v, sort_keys=True) if isinstance(v, dict) else v)
            for k, v in r.items()
            if k not in VOLATILE_ROW
        }
        for r in read_profiles(deployment.store)
    }
    entries, model, version = read_store_vectors(deployment.store)
    vectors = {(t, e): v for t, e, v in entries}
    state_path = deployment.state_dir / "state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    dead_path = deployment.state_dir / "dead_letter.jsonl"
    dead = Counter(  # paths ("where") relative to the work dir: each copy has its own
        json.dumps(
            {k: v for k, v in json.loads(line).items() if k not in VOLATILE_DEAD_LETTER}, sort_keys=True
        ).replace(str(deployment.work_dir), "<work>")
        for line in (dead_path.read_text().splitlines() if dead_path.exists() else [])
        if line.strip()
    )
    points: dict[str, dict[str, Any]] = {}
    client = QdrantClient(path=str(deployment.work_dir / "qdrant"))
    try:
        for collection in sorted(c.name for c in client.get_collections().collections):
            found: dict[str, Any] = {}
            offset = None
            while True:
                batch, offset = client.scroll(
                    collection, limit=1000, offset=offset, with_payload=True, with_vectors=True
                )
                for p in batch:
                    payload = {k: v for k, v in (p.payload or {}).items() if k not in VOLATILE_PAYLOAD}
                    found[str(p.id)] = (payload, p.vector)
                if offset is None:
                    break
            points[collection] = found
    finally:
        client.close()
    return {
        "rows": rows,
        "vectors": vectors,
        "store_meta": (model, version),
        "watermarks": (state.get("feedback_offset"), state.get("catalog_offset")),
        "dead_letters": dead,
        "points": points,
    }


def _vectors_equal(a: Any, b: Any) -> bool:
    if isinstance(a, dict) or isinstance(b, dict):
        return (
            isinstance(a, dict)
            and isinstance(b, dict)
            and a.keys() == b.keys()
            and all(_vectors_equal(a[k], b[k]) for k in a)
        )
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return x.shape == y.shape and bool(np.allclose(x, y, atol=ATOL, rtol=0))


def differences(got: dict[str, Any], want: dict[str, Any], limit: int = 10) -> list[str]:
    """How ``got`` differs from the reference ``want`` (empty: converged)."""
    out: list[str] = []
    for name in ("store_meta", "watermarks", "dead_letters"):
        if got[name] != want[name]:
            out.append(f"{name}: {got[name]} != {want[name]}")
    if got["rows"].keys() != want["rows"].keys():
        out.append(f"store rows: {len(got['rows'].keys() ^ want['rows'].keys())} keys differ")
    out += [f"store row {k} differs" for k in sorted(want["rows"].keys() & got["rows"].keys())
            if got["rows"][k] != want["rows"][k]][:limit]  # fmt: skip
    if got["vectors"].keys() != want["vectors"].keys():
        out.append(f"store vectors: {len(got['vectors'].keys() ^ want['vectors'].keys())} entities differ")
    out += [f"store vectors of {k} differ" for k in sorted(want["vectors"].keys() & got["vectors"].keys())
            if not _vectors_equal(got["vectors"][k], want["vectors"][k])][:limit]  # fmt: skip
    if got["points"].keys() != want["points"].keys():
        out.append(f"qdrant collections: {sorted(got['points'])} != {sorted(want['points'])}")
    for collection in sorted(want["points"].keys() & got["points"].keys()):
        g, w = got["points"][collection], want["points"][collection]
        if g.keys() != w.keys():
            out.append(f"qdrant {collection}: {len(g.keys() ^ w.keys())} point ids differ")
        bad = [
            i
            for i in sorted(g.keys() & w.keys())
            if g[i][0] != w[i][0] or not _vectors_equal(g[i][1], w[i][1])
        ]
        if bad:
            out.append(f"qdrant {collection}: {len(bad)} points differ (e.g. {bad[0]})")
    return out[:limit]


def _counts(snap: dict[str, Any]) -> dict[str, int]:
    return {
        "store_rows": len(snap["rows"]),
        "store_entities": len(snap["vectors"]),
        "qdrant_points": sum(len(p) for p in snap["points"].values()),
        "qdrant_collections": len(snap["points"]),
        "dead_letters": sum(snap["dead_letters"].values()),
    }


# ---------------------------------------------------------------------- the part
def refresh_kills(
    deployment: Deployment, kills: int = 20, seed: int = 0, strategy: str = "extractive"
) -> dict[str, Any]:
    events = seed_day(deployment, seed)
    scratch = deployment.root / "refresh-kills"
    reference = copy_state(deployment, scratch / "reference")
    full = run_refresh(reference, strategy)
    if full.code != 0:
        raise RuntimeError(f"the uninterrupted refresh exited {full.code}: {full.stderr[-2000:]}")
    report = json.loads((reference.state_dir / "last_report.json").read_text())
    second = run_refresh(reference, strategy)
    second_report = json.loads((reference.state_dir / "last_report.json").read_text())
    want = snapshot(reference)
    rng = random.Random(seed)
    trials: list[dict[str, Any]] = []
    k = 0
    while sum(1 for t in trials if t["killed"]) < kills and k < 2 * kills:  # a run may end before its point
        k += 1
        trial = copy_state(deployment, scratch / f"kill-{k:02d}")
        point = draw_kill_point(rng, report["durations"])
        killed = run_refresh(trial, strategy, kill=point)
        stage = (killed.stages[-1] if killed.stages else "startup") if killed.killed else "finished"
        if killed.killed and (trial.state_dir / "state.json").exists():
            stage = "after_watermarks"  # killed on its way out (the state was saved)
        rerun = run_refresh(trial, strategy)
        diff = differences(snapshot(trial), want) if rerun.code == 0 else [f"rerun exited {rerun.code}"]
        trials.append(
            {
                "kill_in": point.stage,
                "kill_after_s": round(point.after_s, 2),
                "killed": killed.killed,
                "exit": killed.code,
                "stage": stage,
                "rerun_exit": rerun.code,
                "rerun_s": round(rerun.seconds, 1),
                "differences": diff,
            }
        )
        shutil.rmtree(trial.root, ignore_errors=True)
    return {
        "strategy": strategy,
        "events_written": events,
        "reference_s": round(full.seconds, 1),
        "reference_status": report["status"],
        "reference_users": len(report["users"]),
        "reference_items": len(report["items"]),
        "reference_quarantined": len(report["quarantined"]),
        "reference_stage_s": report["durations"],
        "second_run_status": second_report["status"] if second.code == 0 else f"exit {second.code}",
        **_counts(want),
        "kills": kills,
        "attempts": len(trials),
        "killed": sum(1 for t in trials if t["killed"]),
        "stages_hit": dict(Counter(t["stage"] for t in trials)),
        "reruns_ok": sum(1 for t in trials if t["rerun_exit"] == 0),
        "converged": sum(1 for t in trials if not t["differences"]),
        "not_converged": [t for t in trials if t["differences"]][:5],
        "kill_points": [[t["kill_in"], t["kill_after_s"]] for t in trials],
    }
