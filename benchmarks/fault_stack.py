"""The pieces the resilience parts share: a private deployment served by ``python -m service`` (keys
required, its own session so it can be SIGKILLed with its workers), a steady mixed load from a few
threads, latency summaries."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.day_in_the_life import API_KEY, Deployment, RedisServer, ServiceProcess, free_port
from rec_contract.bundle import resolve_pointer

KEYS = {"X-API-Key": API_KEY}


def serving_workers(url: str) -> dict[str, str]:
    """The worker processes that serve a bundle, and its version, from ``/metrics`` (every worker's
    ``profilerec_model_info`` series, labelled with its ``pid``; a single process has no ``pid``)."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    serving: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "profilerec_model_info":
            continue
        for sample in family.samples:
            if sample.value == 1:
                serving[sample.labels.get("pid", "")] = sample.labels["bundle_version"]
    return serving


def wait_workers(url: str, workers: int, timeout: float) -> None:
    """Until ``workers`` worker processes serve a bundle (:func:`serving_workers`)."""
    deadline = time.monotonic() + timeout
    while (serving := len(serving_workers(url))) < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{serving} of {workers} workers serve a bundle after {timeout:.0f} s")
        time.sleep(0.2)


class Service:
    """The service of a :class:`Deployment` on a free loopback port, with extra settings."""

    def __init__(self, deployment: Deployment, workers: int, redis_url: str = "", **settings: str) -> None:
        self.deployment = deployment
        port = free_port()
        env = {
            **deployment.env(redis_url, f"http://127.0.0.1:{port}"),
            "PROFILEREC_LOG_FORMAT": "json",
            **{f"PROFILEREC_{k.upper()}": v for k, v in settings.items()},
        }
        self.process = ServiceProcess(deployment, env, workers, deployment.root / "service.log", port)
        self.url = self.process.url

    def start(self, wait_for: str = "/readyz", timeout: float = 180) -> float:
        """Start and wait until ``wait_for`` answers 200 (for ``/readyz``: and every worker serves a
        bundle; one worker's 200 says nothing of the other's). Returns the seconds it took."""
        started = time.monotonic()
        self.process.start()
        last = "no answer"
        while time.monotonic() - started < timeout:
            proc = self.process.proc
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"the service exited with {proc.returncode}: {self.log_tail()}")
            try:
                answer = httpx.get(f"{self.url}{wait_for}", timeout=5)
                if answer.status_code == 200:
                    if wait_for == "/readyz":
                        left = timeout - (time.monotonic() - started)
                        try:
                            wait_workers(self.url, self.process.workers, left)
                        except RuntimeError as exc:
                            raise RuntimeError(f"{exc}: {self.log_tail()}") from exc
                    return time.monotonic() - started
                last = f"{answer.status_code} {answer.text[:200]}"
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            time.sleep(0.2)
        raise RuntimeError(f"{wait_for} not 200 after {timeout:.0f} s ({last}): {self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL the service and its workers (no graceful shutdown)."""
        proc = self.process.proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        self.process.proc = None

    def stop(self) -> None:
        self.process.stop()

    def log_tail(self, chars: int = 1500) -> str:
        try:
            return self.process.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    @contextlib.contextmanager
    def running(self, wait_for: str = "/readyz") -> Iterator[Service]:
        self.start(wait_for)
        try:
            yield self
        finally:
            self.stop()


@contextlib.contextmanager
def with_redis(deployment: Deployment, workers: int) -> Iterator[tuple[Service, RedisServer]]:
    """A private redis-server and the service using it (ready), both stopped on the way out."""
    redis = RedisServer(deployment.root / "redis")
    redis.start()
    try:
        with Service(deployment, workers, redis.url, reload_interval_s="0").running() as service:
            yield service, redis
    finally:
        redis.stop()


@dataclass
class Catalogue:
    users: list[str]
    items: list[str]  # most popular first

    @classmethod
    def of(cls, deployment: Deployment) -> Catalogue:
        bundle = resolve_pointer(deployment.bundles_root)
        users = [str(u) for u in json.loads((bundle / "users.json").read_text())]
        items = [str(i) for i in json.loads((bundle / "items.json").read_text())]
        meta = json.loads((bundle / "items_meta.json").read_text())
        order = sorted(range(len(items)), key=lambda i: -int(meta[i].get("popularity", 0)))
        return cls(users, [items[i] for i in order])


@dataclass
class Sample:
    started: float  # time.monotonic()
    seconds: float
    kind: str
    status: int  # -1: transport error (no answer)
    version: str | None = None


@dataclass
class Load:
    """A steady mixed load (known users 50%, cold start 30%, feedback 20%; with ``upserts``, 2% of the
    requests are item upserts instead of feedback, new ``load-item-*`` items embedded from their text)
    from ``threads`` threads, each paced to ``rate`` requests/s (0: as fast as it answers). Feedback
    users are ``load-*`` ids; what each acknowledged is kept with the time of the acknowledgement."""

    url: str
    catalogue: Catalogue
    threads: int = 4
    rate: float = 0.0
    seed: int = 0
    timeout: float = 30.0
    upserts: bool = False
    samples: list[Sample] = field(default_factory=list)
    acked: list[tuple[float, str, str]] = field(default_factory=list)  # (time, user, item)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        for t in range(self.threads):
            worker = threading.Thread(target=self._run, args=(t,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def stop(self) -> list[Sample]:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=self.timeout + 5)
        return self.samples

    def _run(self, thread: int) -> None:
        rng = random.Random(self.seed * 1000 + thread)
        top = self.catalogue.items[:300]
        with httpx.Client(base_url=self.url, headers=KEYS, timeout=self.timeout) as client:
            while not self._stop.is_set():
                began = time.monotonic()
                roll = rng.random()
                if roll < 0.5:
                    kind, request = "known", client.build_request(
                        "GET", f"/v1/users/{rng.choice(self.catalogue.users)}/recommendations",
                        params={"n": rng.choice([10, 20])},
                    )  # fmt: skip
                elif roll < 0.8:
                    body = {"liked_items": rng.sample(top, rng.randint(1, 4)), "n": 10}
                    kind, request = "cold", client.build_request("POST", "/v1/recommendations", json=body)
                elif self.upserts and roll < 0.82:
                    item_id = f"load-item-{self.seed}-{thread}-{rng.randrange(10**6)}"
                    body = {"title": f"Load item {item_id}", "text": "a quiet drama about a family farm",
                            "categories": ["Drama"]}  # fmt: skip
                    kind, request = "upsert", client.build_request("PUT", f"/v1/items/{item_id}", json=body)
                else:
                    user, item = f"load-{self.seed}-{thread}-{rng.randrange(50)}", rng.choice(top)
                    events = [{"user_id": user, "item_id": item, "type": "click"}]
                    kind, request = "feedback", client.build_request("POST", "/v1/feedback", json=events)
                status, version = -1, None
                try:
                    answer = client.send(request)
                    status = answer.status_code
                    if kind in ("known", "cold") and status == 200:
                        version = answer.json().get("model_version")
                    elif kind == "feedback" and status == 200:
                        self.acked.append((time.monotonic(), user, item))
                except httpx.HTTPError:
                    pass
                self.samples.append(Sample(began, time.monotonic() - began, kind, status, version))
                if self.rate > 0:
                    self._stop.wait(max(0.0, 1.0 / self.rate - (time.monotonic() - began)))


def percentiles(samples: Sequence[Sample]) -> dict[str, Any]:
    """Count, failures (non-2xx or no answer), p50 and p99 latency (ms) of ``samples``."""
    latencies = sorted(s.seconds * 1000 for s in samples)
    failed = sum(1 for s in samples if not 200 <= s.status < 300)
    if not latencies:
        return {"requests": 0, "failed": 0, "p50_ms": None, "p99_ms": None}
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    return {
        "requests": len(latencies),
        "failed": failed,
        "p50_ms": round(statistics.median(latencies), 1),
        "p99_ms": round(p99, 1),
    }


def statuses(samples: Sequence[Sample]) -> dict[str, int]:
    return dict(Counter(f"{s.kind} {s.status}" for s in samples))


def recommended(url: str, user: str, n: int = 100) -> list[str]:
    answer = httpx.get(f"{url}/v1/users/{user}/recommendations", params={"n": n}, headers=KEYS, timeout=30)
    answer.raise_for_status()
    return [str(r["item_id"]) for r in answer.json()["items"]]
