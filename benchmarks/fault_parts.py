"""The fault parts of ``python -m benchmarks resilience`` (issue 17, item 6), each a bounded run on
loopback against ``python -m service`` (2 workers, keys required) on a private :class:`Deployment`:

- :func:`redis_kill`: Redis SIGKILLed and restarted under a steady mixed load;
- :func:`qdrant_unavailable`: the Qdrant engine, its Qdrant hanging (accepts, never answers) or gone
  (port refused) while the service serves: every request answered within the configured timeout,
  503 + Retry-After + a JSON reason; then Qdrant back, and the same service processes serve again
  (and, for ``down``, the service started while Qdrant refuses, serving once it answers);
- :func:`corrupt_bundle`: a bundle with one corrupted file promoted while serving;
- :func:`feedback_kills`: the service SIGKILLed during acknowledged feedback writes.

Each returns its figures (a dict); the integration tests run them small and assert on the figures.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import threading
import time
from collections import Counter
from typing import Any

import httpx

from benchmarks.day_in_the_life import Deployment
from benchmarks.fake_qdrant import FakeQdrant
from benchmarks.fault_stack import (
    KEYS,
    Catalogue,
    Load,
    Service,
    percentiles,
    recommended,
    statuses,
    with_redis,
)
from rec_contract.bundle import MANIFEST_FILE, promote, resolve_pointer
from rec_contract.event_log import read_events


# ---------------------------------------------------------------------- Redis killed under load
def redis_kill(
    deployment: Deployment,
    workers: int = 2,
    threads: int = 4,
    phase_s: float = 10.0,
    probe_users: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """Load for ``phase_s`` before, during (Redis SIGKILLed) and after (Redis restarted, same port).
    Feedback given before the kill (probe users' top items, and the load's own) must stay excluded."""
    catalogue = Catalogue.of(deployment)
    with with_redis(deployment, workers) as (service, redis):
        fed: dict[str, set[str]] = {}
        for user in catalogue.users[:probe_users]:
            top = recommended(service.url, user, 10)[:3]
            events = [{"user_id": user, "item_id": i, "type": "click"} for i in top]
            sent = httpx.post(f"{service.url}/v1/feedback", json=events, headers=KEYS, timeout=30)
            sent.raise_for_status()
            fed[user] = set(top)
        load = Load(service.url, catalogue, threads=threads, seed=seed).start()
        time.sleep(phase_s)
        assert redis.proc is not None
        killed_at = time.monotonic()
        redis.proc.kill()
        redis.proc.wait()
        redis.proc = None
        time.sleep(phase_s)
        redis.start()  # the same port: the service reconnects by itself
        restarted_at = time.monotonic()
        time.sleep(phase_s)
        samples = load.stop()
        for acked_at, user, item in load.acked:
            if acked_at < killed_at:
                fed.setdefault(user, set()).add(item)
        came_back = {u: sorted(fed[u] & set(recommended(service.url, u, 100))) for u in fed}
        ready = httpx.get(f"{service.url}/readyz", timeout=10).json()
    phases = {
        "before": [s for s in samples if s.started < killed_at],
        "during": [s for s in samples if killed_at <= s.started < restarted_at],
        "after": [s for s in samples if s.started >= restarted_at],
    }
    figures: dict[str, Any] = {"requests": len(samples), "failed": sum(1 for s in samples if s.status != 200)}
    for name, part in phases.items():
        for key, value in percentiles(part).items():
            figures[f"{name}_{key}"] = value
    figures.update(
        {
            "statuses": statuses(samples),
            "outage_s": round(restarted_at - killed_at, 1),
            "excluded_users_checked": len(fed),
            "excluded_items_checked": sum(len(v) for v in fed.values()),
            "excluded_items_returned": sum(len(v) for v in came_back.values()),
            "readyz_after": ready.get("status"),
        }
    )
    return figures


# ---------------------------------------------------------------------- Qdrant down or hanging
class _Prober:
    """Requests that need the item store (known user, cold start, new item, in turn), each outcome kept:
    status, seconds, Retry-After, the JSON error code, the body."""

    def __init__(self, url: str, catalogue: Catalogue, timeout_s: float) -> None:
        self.catalogue = catalogue
        self.client = httpx.Client(base_url=url, headers=KEYS, timeout=timeout_s + 30)
        self.lock = threading.Lock()
        self.sent = 0

    def close(self) -> None:
        self.client.close()

    def one(self, i: int) -> dict[str, Any]:
        kind = ("known", "cold", "upsert")[i % 3]
        users, items = self.catalogue.users, self.catalogue.items
        if kind == "known":
            request = self.client.build_request("GET", f"/v1/users/{users[i % len(users)]}/recommendations")
        elif kind == "cold":
            body = {"liked_items": items[i % 300 : i % 300 + 2], "n": 10}
            request = self.client.build_request("POST", "/v1/recommendations", json=body)
        else:
            item = {"title": f"Resilience probe {i}", "categories": ["Drama"], "text": "a test item"}
            request = self.client.build_request("PUT", f"/v1/items/qprobe-{i}", json=item)
        began = time.monotonic()
        try:
            answer = self.client.send(request)
            status, headers, text = answer.status_code, answer.headers, answer.text
        except httpx.HTTPError as exc:
            status, headers, text = -1, httpx.Headers(), type(exc).__name__
        seconds = time.monotonic() - began
        try:
            reason = json.loads(text)["error"]["code"]
        except (ValueError, KeyError, TypeError):
            reason = None
        return {"kind": kind, "status": status, "seconds": seconds,
                "retry_after": headers.get("Retry-After"), "body": text, "reason": reason}  # fmt: skip

    def batch(self, n: int) -> list[dict[str, Any]]:
        """``n`` requests: half one at a time, half at once."""
        with self.lock:
            first, self.sent = self.sent, self.sent + n
        outcomes = [self.one(i) for i in range(first, first + n // 2)]
        pool = [
            threading.Thread(target=lambda i=i: outcomes.append(self.one(i)))
            for i in range(first + n // 2, first + n)
        ]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        return outcomes

    def until_served(self, consecutive: int, deadline_s: float) -> float | None:
        """Seconds until ``consecutive`` requests in a row were answered 2xx (None: not by the
        deadline); the time counts to the first of them."""
        started = time.monotonic()
        run_began: float | None = None
        run = 0
        while time.monotonic() - started < deadline_s:
            with self.lock:
                i, self.sent = self.sent, self.sent + 1
            began = time.monotonic()
            if 200 <= self.one(i)["status"] < 300:
                run_began = began if run == 0 else run_began
                run += 1
                if run >= consecutive and run_began is not None:
                    return run_began - started
            else:
                run = 0
                time.sleep(0.1)
        return None


def _shaped(outcomes: list[dict[str, Any]], timeout_s: float, url: str) -> dict[str, Any]:
    """The fault-phase figures: 503 + Retry-After + a JSON reason; how many within the timeout (and
    within it + 1 s: the bound before the call kept a reserve for answering)."""
    shaped = [o for o in outcomes if o["status"] == 503 and o["retry_after"] and o["reason"]]
    return {
        "requests": len(outcomes),
        "503_retry_after_json": len(shaped),
        "other": [f"{o['kind']} {o['status']}" for o in outcomes if o not in shaped][:10],
        "reasons": dict(Counter(o["reason"] for o in outcomes)),
        "p50_s": round(sorted(o["seconds"] for o in outcomes)[len(outcomes) // 2], 2),
        "max_s": round(max(o["seconds"] for o in outcomes), 2),
        "within_timeout": sum(1 for o in outcomes if o["seconds"] <= timeout_s),
        "within_timeout_plus_1s": sum(1 for o in outcomes if o["seconds"] <= timeout_s + 1.0),
        "bodies_naming_the_url": sum(1 for o in outcomes if url in o["body"]),
    }


async def _create_collections(deployment: Deployment) -> None:
    """Create the live bundle's collections in the embedded storage, as the export job does on a
    server (the items' content collection is otherwise created by the service when it opens the
    bundle, upserting the catalogue through the stand-in within the request timeout)."""
    from service.runtime import build_runtime
    from service.settings import ServiceSettings

    rt = build_runtime(
        ServiceSettings(
            work_dir=deployment.work_dir,
            bundles_root=deployment.bundles_root,
            engine="qdrant",
            qdrant_path=deployment.work_dir / "qdrant",
            redis_url=None,
            reload_interval_s=0,
            feedback_log=deployment.feedback_log,
            catalog_log=deployment.catalog_log,
        )
    )
    try:
        if not await rt.refresh_bundle():
            raise RuntimeError(f"the live bundle did not open on the embedded Qdrant: {rt.holder.error}")
    finally:
        await rt.close()


def _on_qdrant(deployment: Deployment, workers: int, qdrant: FakeQdrant, timeout_s: float) -> Service:
    """The service on the Qdrant engine, the stand-in's URL, no bundle watcher."""
    return Service(
        deployment,
        workers,
        "",
        engine="qdrant",
        qdrant_url=qdrant.url,
        qdrant_timeout_s=str(timeout_s),
        reload_interval_s="0",
    )


def _ok(outcomes: list[dict[str, Any]]) -> int:
    return sum(1 for o in outcomes if 200 <= o["status"] < 300)


def _ready_again(url: str, timeout_s: float, deadline_s: float, then: int = 4) -> dict[str, Any]:
    """/readyz on a fresh connection each time (either worker may answer) until it says 200, then
    ``then`` more times: how long readiness took to come back after the requests were served again,
    whether it stayed, and the checks of every 503 on the way (the reasons are in the service log)."""
    started = time.monotonic()
    ready_s: float | None = None
    statuses: list[int] = []
    failed: list[Any] = []
    while time.monotonic() - started < deadline_s and len(statuses) < 200:
        answer = httpx.get(f"{url}/readyz", timeout=timeout_s + 10)
        statuses.append(answer.status_code)
        if answer.status_code == 200:
            ready_s = time.monotonic() - started if ready_s is None else ready_s
            if len(statuses) - statuses.index(200) > then:
                break
        else:
            failed.append(answer.json().get("checks"))
        time.sleep(0.1)
    return {
        "readyz_after_status": statuses[-1],
        "readyz_after_s": None if ready_s is None else round(ready_s, 2),
        "readyz_after_statuses": dict(Counter(statuses)),
        "readyz_after_failed_checks": failed[:5],
    }


def qdrant_unavailable(
    deployment: Deployment,
    mode: str,
    timeout_s: float = 2.0,
    workers: int = 2,
    requests: int = 24,
    recovery_deadline_s: float = 60.0,
) -> dict[str, Any]:
    """The service on the Qdrant engine, its Qdrant failing while the service serves, then back. There
    is no Qdrant server here: :class:`FakeQdrant` answers Qdrant's REST API from the deployment's
    embedded storage (qdrant-client local mode), then holds every request unanswered
    (``mode="hang"``) or closes its port (``mode="down"``), then answers again on the same port.

    Phases, each ``requests`` requests that need the item store (known user, cold start, new item; half
    one at a time, half at once): before (2xx expected), during (503 with ``Retry-After`` and a JSON
    error within ``timeout_s`` + 1 s), after Qdrant is back (the same service processes, no restart:
    2xx again; ``recovery_s`` is how long until 6 requests in a row were answered 2xx).

    With ``mode="down"``, the service is also started while Qdrant is unreachable (no bundle watcher:
    ``reload_interval_s`` 0): requests get 503 + Retry-After, and once Qdrant answers the same process
    loads its bundle and serves (``startup_*`` figures)."""
    catalogue = Catalogue.of(deployment)
    storage = deployment.work_dir / "qdrant"
    if not (storage / "collection").is_dir():
        raise FileNotFoundError(f"{storage} holds no Qdrant collections (the deployment has no Qdrant)")
    asyncio.run(_create_collections(deployment))
    figures: dict[str, Any] = {"mode": mode, "timeout_s": timeout_s}
    with FakeQdrant(storage) as qdrant:
        service = _on_qdrant(deployment, workers, qdrant, timeout_s)
        with service.running(wait_for="/readyz"):
            pid = service.process.pid
            prober = _Prober(service.url, catalogue, timeout_s)
            try:
                before = prober.batch(requests)
                if mode == "down":
                    qdrant.go_down()
                else:
                    qdrant.hang()
                during = prober.batch(requests)
                ready_during = httpx.get(f"{service.url}/readyz", timeout=timeout_s + 10)
                qdrant.come_back()
                recovery_s = prober.until_served(6, recovery_deadline_s)
                after = prober.batch(requests)
            finally:
                prober.close()
            ready_after = _ready_again(service.url, timeout_s, recovery_deadline_s)
            proc = service.process.proc
            same_process = service.process.pid == pid and proc is not None and proc.poll() is None
    figures.update(_shaped(during, timeout_s, qdrant.url))
    figures.update(
        {
            "before_requests": len(before),
            "before_ok": _ok(before),
            "readyz_status": ready_during.status_code,
            "readyz_checks": ready_during.json().get("checks"),
            "recovery_s": None if recovery_s is None else round(recovery_s, 2),
            "after_requests": len(after),
            "after_ok": _ok(after),
            "after_statuses": dict(Counter(f"{o['kind']} {o['status']}" for o in after)),
            **ready_after,
            "same_service_process": same_process,
        }
    )
    if mode == "down":
        figures.update(
            _qdrant_down_at_startup(deployment, catalogue, timeout_s, workers, recovery_deadline_s)
        )
    return figures


def _qdrant_down_at_startup(
    deployment: Deployment, catalogue: Catalogue, timeout_s: float, workers: int, deadline_s: float
) -> dict[str, Any]:
    """The service started while its Qdrant refuses (``reload_interval_s`` 0), then Qdrant up."""
    storage = deployment.work_dir / "qdrant"
    with FakeQdrant(storage) as qdrant:
        qdrant.go_down()
        service = _on_qdrant(deployment, workers, qdrant, timeout_s)
        with service.running(wait_for="/healthz"):
            pid = service.process.pid
            ready_down = httpx.get(f"{service.url}/readyz", timeout=timeout_s + 10)
            prober = _Prober(service.url, catalogue, timeout_s)
            try:
                down = prober.batch(6)
                qdrant.come_back()
                back_at = time.monotonic()
                ready_s: float | None = None
                while time.monotonic() - back_at < deadline_s:
                    if httpx.get(f"{service.url}/readyz", timeout=timeout_s + 10).status_code == 200:
                        ready_s = time.monotonic() - back_at
                        break
                    time.sleep(0.25)
                recovery_s = prober.until_served(6, deadline_s)
                after = prober.batch(6)
            finally:
                prober.close()
            same_process = service.process.pid == pid
    return {
        "startup_readyz_checks": ready_down.json().get("checks"),
        "startup_requests": len(down),
        "startup_503_retry_after_json": sum(
            1 for o in down if o["status"] == 503 and o["retry_after"] and o["reason"]
        ),
        "startup_max_s": round(max(o["seconds"] for o in down), 2),
        "startup_ready_after_s": None if ready_s is None else round(ready_s, 2),
        "startup_recovery_s": None if recovery_s is None else round(recovery_s, 2),
        "startup_after_ok": _ok(after),
        "startup_after_requests": len(after),
        "startup_same_service_process": same_process,
    }


# ---------------------------------------------------------------------- a corrupt bundle promoted
def corrupt_bundle(
    deployment: Deployment, workers: int = 2, threads: int = 3, phase_s: float = 8.0, seed: int = 0
) -> dict[str, Any]:
    """Under load, promote a copy of the live bundle with one file's bytes changed (its manifest
    checksum no longer matches): the old bundle must keep serving, ``/readyz`` must name the refused
    promotion without paths."""
    catalogue = Catalogue.of(deployment)
    live = resolve_pointer(deployment.bundles_root)
    manifest = json.loads((live / MANIFEST_FILE).read_text())
    bad_name = f"{live.name}-corrupt"
    bad = deployment.bundles_root / bad_name
    shutil.copytree(live, bad)
    manifest["version"] = bad_name
    (bad / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    victim = bad / "items.json"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit: still looks like a file, the checksum differs
    victim.write_bytes(bytes(data))
    service = Service(deployment, workers, "", reload_interval_s="1")
    with service.running():
        load = Load(service.url, catalogue, threads=threads, seed=seed).start()
        time.sleep(phase_s)
        promoted_at = time.monotonic()
        promote(deployment.bundles_root, bad_name)
        ready: dict[str, Any] = {}
        readyz_text = ""
        refused_after: float | None = None
        deadline = promoted_at + max(phase_s, 20.0)
        while time.monotonic() < deadline:
            answer = httpx.get(f"{service.url}/readyz", timeout=10)
            ready, readyz_text = answer.json(), answer.text
            if ready.get("checks", {}).get("promoted_bundle") == "refused":
                refused_after = time.monotonic() - promoted_at
                break
            time.sleep(0.25)
        time.sleep(phase_s)
        samples = load.stop()
    versions = Counter(s.version for s in samples if s.version is not None)
    return {
        **percentiles(samples),
        "statuses": statuses(samples),
        "corrupted_file": victim.name,
        "served_versions": {("live" if v == live.name else str(v)): n for v, n in versions.items()},
        "refused_seen_after_s": None if refused_after is None else round(refused_after, 1),
        "readyz": ready,
        "readyz_has_paths": "/" in json.dumps(ready.get("checks", {})) or str(deployment.root) in readyz_text,
    }


# ---------------------------------------------------------------------- killed during feedback writes
def _strict_json(line: bytes) -> Any:
    def refuse(token: str) -> Any:
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(line, parse_constant=refuse)


def feedback_kills(
    deployment: Deployment, kills: int = 20, workers: int = 2, threads: int = 4, seed: int = 0
) -> dict[str, Any]:
    """``kills`` times: start the service, write feedback from ``threads`` threads (batches of 1-5
    events with unique ids), SIGKILL the service and its workers at a random moment (0.3-2 s in).
    Every acknowledged event must then be in the log, which must parse as strict JSON lines."""
    catalogue = Catalogue.of(deployment)
    rng = random.Random(seed)
    acked: set[tuple[str, str]] = set()
    sent = 0
    restart_s: list[float] = []
    service = Service(deployment, workers, "", reload_interval_s="0")
    lock = threading.Lock()
    for kill in range(kills):
        restart_s.append(service.start())
        stop = threading.Event()

        def writer(thread: int, kill: int = kill, stop: threading.Event = stop) -> None:
            nonlocal sent
            wrng = random.Random(seed * 10_000 + kill * 100 + thread)
            with httpx.Client(base_url=service.url, headers=KEYS, timeout=10) as client:
                seq = 0
                while not stop.is_set():
                    events = [
                        {"user_id": f"fk-{kill}-{thread}-{seq}-{j}",
                         "item_id": wrng.choice(catalogue.items[:500]), "type": "click"}
                        for j in range(wrng.randint(1, 5))
                    ]  # fmt: skip
                    seq += 1
                    with lock:
                        sent += len(events)
                    try:
                        answer = client.post("/v1/feedback", json=events)
                    except httpx.HTTPError:
                        return  # killed: nothing acknowledged
                    if answer.status_code == 200 and answer.json() == {"accepted": len(events)}:
                        with lock:
                            acked.update((e["user_id"], e["item_id"]) for e in events)

        pool = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
        for t in pool:
            t.start()
        time.sleep(rng.uniform(0.3, 2.0))
        service.kill()
        stop.set()
        for t in pool:
            t.join(timeout=15)
    raw = deployment.feedback_log.read_bytes() if deployment.feedback_log.exists() else b""
    lines = raw.split(b"\n")
    torn_tail = lines[-1] != b""
    logged: set[tuple[str, str]] = set()
    bad_lines = 0
    for line in lines[:-1]:
        try:
            event = _strict_json(line)
            logged.add((event["user_id"], event["item_id"]))
        except (ValueError, KeyError, TypeError):
            bad_lines += 1
    chunk = read_events(deployment.feedback_log)  # what the refresh job and the service read
    via_reader = {(e.get("user_id"), e.get("item_id")) for e in chunk.events}
    return {
        "kills": kills,
        "events_sent": sent,
        "events_acked": len(acked),
        "acked_missing_from_log": len(acked - logged),
        "acked_missing_via_reader": len(acked - via_reader),
        "log_lines": len(lines) - 1,
        "malformed_lines": bad_lines,
        "torn_tail": torn_tail,
        "restart_p50_s": round(sorted(restart_s)[len(restart_s) // 2], 1),
    }
