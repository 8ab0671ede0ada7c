"""A day in the life: several simulated days of seeded, realistic traffic through a private deployment.

``python -m benchmarks day_in_the_life`` copies a deployment (default: the one ``make demo`` built in
``var/``: the live bundle folder, the profile store its manifest names, the text encoder and the
embedded Qdrant storage; ``--from-dir`` for another work dir) into a temporary folder with empty logs,
starts its own redis-server on a free loopback port and the service as a subprocess
(``python -m service --workers 2``, every path pointing into the temporary folder, bundle reload every
0.5 s), then replays ``--days`` days. Every subprocess runs with the temporary folder as its working
directory and its own ``PROFILEREC_*`` paths, so nothing outside it is written.

Each day: known users asking for recommendations (with and without category filters, ``explain``,
``exclude``), new users arriving with feedback (no attributes: likes, clicks, ratings, some dislikes)
and asking again, cold-start requests (liked items, text, both), new items upserted (some junk:
near-empty text, a 4000-character text, odd unicode, RTL and emoji), catalogue items edited, items
deleted, unknown ids and invalid requests (4xx expected, never 5xx), short concurrent bursts from a
thread pool. Each night the refresh (``profilerec-jobs refresh``, extractive by default) runs with
reads going on; every ``--retrain-every`` days the gated retrain (``profilerec-pipeline retrain``; a
refused gate is an allowed outcome, recorded), followed by a rollback and a roll-forward. Faults: a
Redis restart, a refresh killed mid-run with new events arriving before the rerun, a service restart
(and a restart after every pointer move, to see the service come up on the pointed bundle).

After every step the invariants are checked, and the run fails loudly (non-zero exit, the violation
printed with the request and the answer) when one breaks:

* no answer contains an item the user interacted with (the dataset the served bundle was built from,
  or feedback acknowledged before the request), an item deleted before the request, an item the
  request excluded or liked; no duplicates, no item outside the requested categories;
* the nightly refresh exits 0 and its report covers exactly the changed entities (users with new
  positive feedback and items with new positive feedback or upserts since the last successful run),
  minus what it quarantined, each of which is in the dead-letter file with a reason;
* after every promotion and rollback the pointers resolve, ``profilerec-pipeline status`` agrees, the
  service serves the pointed bundle (answers and ``/readyz``) within ``--switch-timeout``, every item
  acknowledged through the API is still known and every deleted one still unknown, and a restarted
  service comes up on it;
* no 5xx, no transport error, every acknowledged feedback and catalogue event is in its log, the
  service's memory (RSS of all its processes, sampled from /proc) stays under ``--rss-limit`` times
  the day-1 maximum;
* a new user with feedback gets ``personalized`` answers; a new item is in the top 20 of a cold-start
  request made of its own text and category (right after the upsert and after the nightly refresh).

It prints a timeline and a summary table and records the summary (``benchmarks/results.jsonl``).
``tests/integration/test_day_in_the_life.py`` runs a two-day version of the same :class:`Replay`.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

from benchmarks.results import print_table, record
from rec_contract.bundle import list_versions, promote, read_manifest, resolve_pointer

REPO = Path(__file__).resolve().parent.parent
CRASH_ENV = "PROFILEREC_REFRESH_CRASH_AFTER"
API_KEY = secrets.token_urlsafe(24)  # this run's keys, given to the service and the refresh job
ADMIN_KEY = secrets.token_urlsafe(24)
EXIT_REFUSED = 3  # profilerec-pipeline retrain: the gate refused the candidate
EXIT_KILLED = 137
ANY_VERSION = "*"  # in Replay.transition: any bundle may answer (a job may promote)
# Settings that would point a subprocess at another deployment: never inherited.
_PRIVATE_ENV = (
    "PROFILEREC_WORK_DIR", "PROFILEREC_BUNDLES_ROOT", "PROFILEREC_FEEDBACK_LOG", "PROFILEREC_CATALOG_LOG",
    "PROFILEREC_PROFILE_STORE", "PROFILEREC_QDRANT_PATH", "PROFILEREC_QDRANT_URL", "PROFILEREC_REDIS_URL",
    "PROFILEREC_ONLINE_DIR", "PROFILEREC_HOST", "PROFILEREC_PORT", "PROFILEREC_WORKERS",
    "PROFILEREC_SERVICE_URL", "PROFILEREC_RELOAD_INTERVAL_S", "PROFILEREC_API_KEY",
    "PROFILEREC_ADMIN_API_KEY", "PROFILEREC_ENGINE", "PROFILEREC_REFRESH_STRATEGY", CRASH_ENV,
    "PROFILEREC_TEXT_ENCODER_DIR", "PROMETHEUS_MULTIPROC_DIR",
)  # fmt: skip

GENRE_WORDS = {
    "Action": "explosive chases and a hero against the odds",
    "Adventure": "a long journey to a lost city",
    "Animation": "hand-drawn animals who learn to fly",
    "Children's": "a family story about friendship",
    "Comedy": "misunderstandings and a wedding that goes wrong",
    "Crime": "a heist planned by an aging thief",
    "Documentary": "real footage of musicians on tour",
    "Drama": "a quiet story of loss and reconciliation",
    "Fantasy": "a wizard, a curse and a kingdom",
    "Film-Noir": "a detective in a rainy city and a femme fatale",
    "Horror": "a haunted house and a masked killer",
    "Musical": "songs, dance numbers and a Broadway dream",
    "Mystery": "a locked-room murder and a clever inspector",
    "Romance": "two strangers who fall in love in Paris",
    "Sci-Fi": "a starship crew exploring a distant galaxy",
    "Thriller": "a conspiracy and a race against time",
    "War": "soldiers surviving a brutal campaign",
    "Western": "gunslingers, a frontier town and a showdown",
}
ADJECTIVES = [
    "Silent",
    "Crimson",
    "Last",
    "Hidden",
    "Golden",
    "Broken",
    "Midnight",
    "Distant",
    "Wild",
    "Paper",
]
NOUNS = ["Harbor", "Promise", "Frontier", "Garden", "Signal", "Empire", "River", "Mirror", "Orbit", "Ghost"]
FEEDBACK_TYPES = ["click", "click", "click", "like", "like", "purchase", "rating", "dislike", "dislike"]
JUNK_KINDS = ("near_empty", "huge", "odd_unicode", "rtl_emoji")


# ---------------------------------------------------------------------- the deployment
@dataclass
class Deployment:
    """A private deployment: every path the service and the jobs use, under ``root``."""

    root: Path
    work_dir: Path
    store: Path
    data_dir: Path

    @property
    def bundles_root(self) -> Path:
        return self.work_dir / "bundles"

    @property
    def feedback_log(self) -> Path:
        return self.work_dir / "feedback" / "feedback.jsonl"

    @property
    def catalog_log(self) -> Path:
        return self.work_dir / "feedback" / "catalog.jsonl"

    @property
    def state_dir(self) -> Path:
        return self.work_dir / "refresh"

    @classmethod
    def copy_from(
        cls,
        dest: Path,
        bundle_dir: Path,
        store: Path,
        text_encoder_dir: Path,
        qdrant_path: Path | None = None,
        data_dir: Path | None = None,
    ) -> Deployment:
        """Copy a live bundle (re-pointed as ``current`` in the copy), its profile store, the text
        encoder and (when there is one) the embedded Qdrant storage into ``dest``; logs start empty."""
        from training.data.registry import data_root

        bundle_dir = Path(bundle_dir).resolve()
        work = Path(dest).resolve() / "work"
        bundles = work / "bundles"
        bundles.mkdir(parents=True)
        shutil.copytree(bundle_dir, bundles / bundle_dir.name)
        promote(bundles, bundle_dir.name)
        store_copy = work / "profiles" / Path(store).name
        shutil.copytree(store, store_copy, ignore=shutil.ignore_patterns("job_cache.sqlite*"))
        shutil.copytree(text_encoder_dir, work / "text_encoder")
        if qdrant_path is not None and Path(qdrant_path).is_dir():
            shutil.copytree(qdrant_path, work / "qdrant", ignore=shutil.ignore_patterns(".lock"))
        (work / "feedback").mkdir()
        return cls(Path(dest).resolve(), work, store_copy, Path(data_dir or data_root()).resolve())

    @classmethod
    def from_work_dir(cls, source: Path, dest: Path, data_dir: Path | None = None) -> Deployment:
        """A private copy of the deployment in a work dir (``var/`` for ``make demo``)."""
        source = Path(source).resolve()
        live = resolve_pointer(source / "bundles")
        manifest = read_manifest(live)
        store = Path(manifest.profiles.store_path)
        if not store.is_absolute():
            store = source.parent / store
        if not store.is_dir():
            raise FileNotFoundError(f"{live.name} names the profile store {store}, which does not exist")
        return cls.copy_from(dest, live, store, source / "text_encoder", source / "qdrant", data_dir)

    def env(self, redis_url: str, service_url: str) -> dict[str, str]:
        """The environment of every subprocess: the caller's, without any deployment setting, plus
        this deployment's paths."""
        base = {k: v for k, v in os.environ.items() if k not in _PRIVATE_ENV}
        base.setdefault("HF_HUB_OFFLINE", "1")
        base.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        return {
            **base,
            "PROFILEREC_WORK_DIR": str(self.work_dir),
            "PROFILEREC_BUNDLES_ROOT": str(self.bundles_root),
            "PROFILEREC_FEEDBACK_LOG": str(self.feedback_log),
            "PROFILEREC_CATALOG_LOG": str(self.catalog_log),
            "PROFILEREC_PROFILE_STORE": str(self.store),
            "PROFILEREC_QDRANT_PATH": str(self.work_dir / "qdrant"),
            "PROFILEREC_DATA_DIR": str(self.data_dir),
            "PROFILEREC_REDIS_URL": redis_url,
            "PROFILEREC_SERVICE_URL": service_url,
            # the service is secure by default: this run's keys (writes, explain=true, the admin routes)
            "PROFILEREC_API_KEY": API_KEY,
            "PROFILEREC_ADMIN_API_KEY": ADMIN_KEY,
        }


# ---------------------------------------------------------------------- configuration and records
@dataclass
class ReplayConfig:
    days: int = 7
    requests_per_day: int = 3000
    new_users_per_day: int = 10
    feedback_per_new_user: int = 10
    known_feedback_per_day: int = 12
    items_per_day: int = 8
    junk_items_per_day: int = 3
    edits_per_day: int = 1
    deletions_per_day: int = 1
    bursts_per_day: int = 2
    burst_requests: int = 120
    burst_threads: int = 8
    probes_per_day: int = 3
    segments_per_day: int = 4
    workers: int = 2
    reload_interval_s: float = 0.5
    refresh_strategy: str = "extractive"
    kill_refresh_at: str = "generate"
    retrain_every: int = 7
    retrain_epochs: int = 2
    retrain_tolerance: float = 0.005
    redis_restart_day: int = 2
    killed_refresh_day: int = 3
    service_restart_day: int = 5
    switch_timeout_s: float = 30.0
    rss_limit: float = 2.0
    job_timeout_s: float = 3600.0
    seed: int = 2024
    fail_fast: bool = True

    def day_of(self, wanted: int) -> int:
        """A fault's day, moved into a shorter run."""
        return max(1, min(wanted, self.days))


@dataclass
class Violation:
    step: str
    what: str
    request: str
    answer: str

    def render(self) -> str:
        return f"VIOLATION [{self.step}] {self.what}\n  request: {self.request}\n  answer:  {self.answer}"


class ReplayFailedError(RuntimeError):
    """An invariant broke (the message lists the violations)."""


@dataclass
class Answer:
    status: int
    body: Any
    request: str

    @property
    def ok(self) -> bool:
        return self.status == 200

    def short(self, limit: int = 600) -> str:
        text = json.dumps(self.body, ensure_ascii=False) if not isinstance(self.body, str) else self.body
        return f"{self.status} {text[:limit]}"


@dataclass
class NewItem:
    item_id: str
    kind: str  # normal | near_empty | huge | odd_unicode | rtl_emoji
    title: str
    text: str
    categories: list[str]

    @property
    def description(self) -> str:
        from rec_contract.content import item_text

        return item_text(self.title, self.categories, self.text)


@dataclass
class Catalogue:
    """What the harness knows of the starting bundle: users, items, categories, popularity."""

    users: list[str]
    items: list[str]
    titles: dict[str, str]
    categories: dict[str, list[str]]
    popular: list[str]
    genres: list[str]

    @property
    def item_set(self) -> frozenset[str]:
        return frozenset(self.items)

    @classmethod
    def of_bundle(cls, bundle: Path) -> Catalogue:
        users = [str(u) for u in json.loads((bundle / "users.json").read_text())]
        items = [str(i) for i in json.loads((bundle / "items.json").read_text())]
        meta = json.loads((bundle / "items_meta.json").read_text())
        cats = {i: [str(c) for c in m.get("categories", [])] for i, m in zip(items, meta, strict=True)}
        order = sorted(range(len(items)), key=lambda r: -int(meta[r].get("popularity", 0)))
        counts = collections.Counter(c for cs in cats.values() for c in cs)
        return cls(
            users=users,
            items=items,
            titles={i: str(m.get("title", i)) for i, m in zip(items, meta, strict=True)},
            categories=cats,
            popular=[items[r] for r in order],
            genres=[c for c, n in counts.most_common() if n >= 5],
        )


# ---------------------------------------------------------------------- processes
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _process_rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def tree_rss_mb(root_pid: int) -> float:
    """Resident memory of a process and all its descendants (MiB), from /proc."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children[ppid].append(int(entry.name))
    total, todo = 0, [root_pid]
    while todo:
        pid = todo.pop()
        total += _process_rss_kb(pid)
        todo.extend(children.get(pid, []))
    return total / 1024


class RedisServer:
    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.folder = folder
        self.proc: subprocess.Popen[bytes] | None = None

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while not self.answers():
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


class ServiceProcess:
    """``python -m service`` as a subprocess (its own session, so its workers can be stopped with it)."""

    def __init__(
        self, deployment: Deployment, env: dict[str, str], workers: int, log_path: Path, port: int
    ) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{self.port}"
        self.deployment = deployment
        self.env = env
        self.workers = workers
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "service", "--workers", str(self.workers), "--host", "127.0.0.1",
                 "--port", str(self.port)],
                env=self.env,
                cwd=self.deployment.root,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def stop(self) -> float:
        """Graceful stop (SIGTERM; the group is killed after 30 s). Returns the seconds it took."""
        started = time.monotonic()
        if self.proc is None:
            return 0.0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
        return time.monotonic() - started


@dataclass
class JobResult:
    code: int
    seconds: float
    max_rss_mb: float
    stdout: str
    stderr: str


# ---------------------------------------------------------------------- the replay
class Replay:
    """Replays the configured days against a :class:`Deployment` and checks the invariants."""

    def __init__(
        self, deployment: Deployment, config: ReplayConfig, log: Callable[[str], None] = print
    ) -> None:
        self.d = deployment
        self.cfg = config
        self.say = log
        self.rng = random.Random(config.seed)
        self.lock = threading.Lock()
        self.restart_lock = threading.Lock()
        self.started = time.monotonic()
        self.counts: collections.Counter[str] = collections.Counter()
        self.causes_4xx: collections.Counter[str] = collections.Counter()
        self.violations: list[Violation] = []
        self.timeline: list[dict[str, Any]] = []
        self.day_rows: list[dict[str, Any]] = []
        self.step = "start"
        self.day = 0
        # what the harness knows happened (acknowledged by the service)
        self.deleted: set[str] = set()
        self.added: dict[str, NewItem] = {}  # alive items added through the API
        self.feedback_of: dict[str, set[str]] = collections.defaultdict(set)
        self.acked_feedback: collections.Counter[tuple[str, str, str, Any]] = collections.Counter()
        self.acked_catalog: collections.Counter[tuple[str, str]] = collections.Counter()
        self.logged_feedback: collections.Counter[tuple[str, str, str, Any]] = collections.Counter()
        self.logged_catalog: collections.Counter[tuple[str, str]] = collections.Counter()
        self.pending_feedback: list[dict[str, Any]] = []  # acknowledged since the last good refresh
        self.pending_upserts: set[str] = set()
        self.new_users: list[str] = []
        self.items_today: list[str] = []
        self.refreshed_users: list[str] = []
        # what is served
        self.expected_version = ""
        self.transition: set[str] = set()  # versions allowed while a switch settles
        self.seen: dict[str, set[str]] = collections.defaultdict(set)
        self.seen_sources: set[str] = set()
        self.catalogues: dict[str, frozenset[str]] = {}
        # memory and outcomes
        self.rss_by_day: dict[int, float] = {}
        self.rss_now = 0.0
        self.refresh_outcomes: list[dict[str, Any]] = []
        self.retrain_outcomes: list[str] = []
        self.switch_seconds: list[float] = []
        self.new_item_ranks: list[int] = []
        self.junk_counter = 0
        self.deletion_counter = 0
        self.redis = RedisServer(deployment.root / "redis")
        self.service: ServiceProcess | None = None
        self.env: dict[str, str] = {}
        self._local = threading.local()
        self._stop_sampler = threading.Event()
        live = resolve_pointer(deployment.bundles_root)
        self.initial_version = live.name
        self.catalogue = Catalogue.of_bundle(live)
        self.catalogue_items = self.catalogue.item_set

    # ------------------------------------------------------------------ running
    def run(self) -> dict[str, Any]:
        """The whole replay. Returns the summary; raises :class:`ReplayFailedError` on a violation
        (``fail_fast``) or at the end when any was found."""
        from rec_contract.event_log import LogFollower

        self.fb_follower = LogFollower(self.d.feedback_log)
        self.cat_follower = LogFollower(self.d.catalog_log)
        sampler = threading.Thread(target=self._sample_memory, daemon=True)
        try:
            self.redis.start()
            port = free_port()
            self.env = {
                **self.d.env(self.redis.url, f"http://127.0.0.1:{port}"),
                "PROFILEREC_RELOAD_INTERVAL_S": str(self.cfg.reload_interval_s),
                "PROFILEREC_LOG_FORMAT": "json",
            }
            self.service = ServiceProcess(
                self.d, self.env, self.cfg.workers, self.d.root / "service.log", port
            )
            live = resolve_pointer(self.d.bundles_root).name
            self.expected_version = live
            self._load_seen(live)
            self.service.start()
            ready = self.wait_ready(live, 180)
            self.end_step(f"service up ({self.cfg.workers} workers) on {live}", f"ready in {ready:.1f} s")
            sampler.start()
            for day in range(1, self.cfg.days + 1):
                self.run_day(day)
        finally:
            self._stop_sampler.set()
            if self.service is not None:
                self.service.stop()
            self.redis.stop()
        summary = self.summary()
        if self.violations:
            raise ReplayFailedError(
                f"{len(self.violations)} violation(s):\n"
                + "\n".join(v.render() for v in self.violations[:50])
            )
        return summary

    def run_day(self, day: int) -> None:
        cfg = self.cfg
        self.day = day
        self.items_today = []
        before = dict(self.counts)
        events: list[tuple[str, str]] = []
        events += [("new_user", "")] * cfg.new_users_per_day
        events += [("known_feedback", "")] * cfg.known_feedback_per_day
        junk = min(cfg.junk_items_per_day, cfg.items_per_day)
        events += [("upsert", "junk")] * junk + [("upsert", "normal")] * (cfg.items_per_day - junk)
        events += [("edit", "")] * cfg.edits_per_day
        events += [("delete", "")] * cfg.deletions_per_day
        events += [("burst", "")] * cfg.bursts_per_day
        events += [("probes", "")] * cfg.probes_per_day
        plan = sorted((self.rng.random(), kind, arg) for kind, arg in events)
        start = self.counts["requests"]
        segments = max(1, cfg.segments_per_day)
        for seg in range(segments):
            seg_end = (seg + 1) / segments
            seg_start_requests = self.counts["requests"]
            done_events: collections.Counter[str] = collections.Counter()
            while True:
                progress = (self.counts["requests"] - start) / max(1, cfg.requests_per_day)
                nxt = plan[0][0] if plan else 2.0
                if nxt <= seg_end and (nxt <= progress or progress >= seg_end):
                    _, kind, arg = plan.pop(0)
                    self.event(kind, arg)
                    done_events[kind] += 1
                elif progress < seg_end:
                    self.filler(self.rng, self.client())
                else:
                    break
            what = ", ".join(f"{n} {k}" for k, n in sorted(done_events.items())) or "reads only"
            self.end_step(
                f"traffic {seg + 1}/{segments}",
                f"{self.counts['requests'] - seg_start_requests} requests ({what})",
            )
            if day == cfg.day_of(cfg.redis_restart_day) and seg == segments // 2 - 1:
                self.redis_restart()
            if day == cfg.day_of(cfg.service_restart_day) and seg == max(0, segments - 2):
                self.service_restart("fault: service restart")
        self.nightly_refresh(kill=day == cfg.day_of(cfg.killed_refresh_day))
        if cfg.retrain_every > 0 and day % cfg.retrain_every == 0:
            self.weekly_retrain()
        self.check_catalogue("end of day")
        self.end_step("end of day", f"{self.counts['requests'] - start} requests today")
        row: dict[str, Any] = {"day": day}
        for key in ("requests", "5xx", "4xx", "feedback_events", "new_users", "items_new", "deletions"):
            row[key] = self.counts[key] - before.get(key, 0)
        last = self.refresh_outcomes[-1] if self.refresh_outcomes else {}
        row["refresh"] = f"{last.get('status', '-')} {last.get('seconds', 0):.1f}s"
        row["max_rss_mb"] = round(self.rss_by_day.get(day, 0.0), 1)
        self.day_rows.append(row)

    # ------------------------------------------------------------------ HTTP
    def client(self) -> httpx.Client:
        """This thread's keep-alive client for the current service (a new one after a restart)."""
        assert self.service is not None
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None or getattr(self._local, "url", None) != self.service.url:
            client = httpx.Client(base_url=self.service.url, timeout=60, headers={"X-API-Key": API_KEY})
            self._local.client, self._local.url = client, self.service.url
        return client

    def reset_clients(self) -> None:
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is not None:
            client.close()
        self._local.client = None

    def call(
        self,
        client: httpx.Client,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        expect: Sequence[int] = (200,),
    ) -> Answer:
        request = f"{method} {path}" + (f"?{urlencode(params, doseq=True)}" if params else "")
        if body is not None:
            request += " " + json.dumps(body, ensure_ascii=False)[:400]
        try:
            response = client.request(method, path, params=params, json=body)
        except httpx.HTTPError as exc:
            with self.lock:
                self.counts["requests"] += 1
                self.counts["transport_errors"] += 1
            if not self._service_lost():
                self.violation("transport error", request, f"{type(exc).__name__}: {exc}")
            return Answer(0, None, request)
        status = response.status_code
        try:
            data: Any = response.json() if response.content else None
        except ValueError:
            data = response.text
        with self.lock:
            self.counts["requests"] += 1
            self.counts[f"{status // 100}xx"] += 1
            if 400 <= status < 500:
                code = data.get("error", {}).get("code", "?") if isinstance(data, dict) else "?"
                self.causes_4xx[f"{status} {code}"] += 1
        answer = Answer(status, data, request)
        if status >= 500:
            self.violation(f"HTTP {status}", request, answer.short())
        elif status not in expect:
            self.violation(
                f"expected HTTP {'/'.join(map(str, expect))}, got {status}", request, answer.short()
            )
        return answer

    def _service_lost(self) -> bool:
        """True when the service process has exited on its own (or was killed from outside): one
        violation with the reason, and it is started again (a transport error then is not counted)."""
        with self.restart_lock:
            service = self.service
            if service is None or service.proc is None:
                return True
            code = service.proc.poll()
            if code is None:
                return False
            tail = service.log_path.read_text(errors="replace").splitlines()[-30:]
            said = [line[:200] for line in tail if "SIGTERM" in line or "Error" in line or "exiting" in line]
            self.violation(
                f"the service exited unexpectedly with status {code}",
                f"pid {service.proc.pid}",
                " | ".join(said[-5:]) or f"see {service.log_path}",
            )
            self.counts["unplanned_service_restarts"] += 1
            service.start()
        self.wait_ready(self.expected_version, 180)
        return True

    # ------------------------------------------------------------------ answers
    def _catalogue_of(self, version: str) -> frozenset[str]:
        if version not in self.catalogues:
            path = self.d.bundles_root / version / "items.json"
            ids = json.loads(path.read_text()) if path.exists() else []
            self.catalogues[version] = frozenset(str(i) for i in ids)
        return self.catalogues[version]

    def _load_seen(self, version: str) -> None:
        """Add the interactions of the dataset ``version`` was built from to the seen sets."""
        from training.data import load_dataset

        manifest = read_manifest(self.d.bundles_root / version)
        source = manifest.dataset.source or manifest.dataset.name
        if source in self.seen_sources:
            return
        dataset = load_dataset(source, self.d.data_dir)
        users, items = dataset.user_ids[dataset.user], dataset.item_ids[dataset.item]
        for u, i in zip(users.tolist(), items.tolist(), strict=True):
            self.seen[str(u)].add(str(i))
        self.seen_sources.add(source)

    def check_recs(
        self,
        answer: Answer,
        *,
        n: int,
        user: str | None = None,
        categories: Sequence[str] = (),
        exclude: Sequence[str] = (),
        liked: Sequence[str] = (),
        strategy: str | None = None,
    ) -> list[str]:
        """The invariants of one recommendation answer. Returns its item ids."""
        if not answer.ok or not isinstance(answer.body, dict):
            return []
        body = answer.body
        items = [str(i["item_id"]) for i in body.get("items", [])]
        problems: list[str] = []
        if len(items) > n:
            problems.append(f"{len(items)} items for n={n}")
        if len(set(items)) != len(items):
            problems.append(
                "duplicate items: " + ", ".join(i for i, c in collections.Counter(items).items() if c > 1)
            )
        reasons: dict[str, str] = {}
        if user is not None:
            for i in items:
                if i in self.seen.get(user, ()):
                    reasons[i] = "interacted with (bundle data)"
                elif i in self.feedback_of.get(user, ()):
                    reasons[i] = "interacted with (acknowledged feedback)"
        for i in items:
            if i in self.deleted:
                reasons[i] = "deleted before the request"
            elif i in exclude:
                reasons[i] = "excluded by the request"
            elif i in liked:
                reasons[i] = "liked in the request"
        for item, why in reasons.items():
            problems.append(f"item {item}: {why}")
        if categories:
            wanted = set(categories)
            outside = [str(i["item_id"]) for i in body["items"] if not wanted & set(i.get("categories", []))]
            if outside:
                problems.append(f"items outside the categories {sorted(wanted)}: {outside}")
        version = str(body.get("model_version"))
        if version != self.expected_version and not ({version, ANY_VERSION} & self.transition):
            problems.append(f"model_version {version}, the pointed bundle is {self.expected_version}")
        if strategy is not None and body.get("strategy") != strategy:
            problems.append(f"strategy {body.get('strategy')!r}, expected {strategy!r}")
        for problem in problems:
            self.violation(problem, answer.request, answer.short())
        return items

    def _user_strategy(self, user: str, version: str) -> str | None:
        """The strategy a user's answer must have (None: not checked)."""
        if user in self.seen or user in self._catalogue_users(version):
            return "personalized"
        if self.feedback_of.get(user, set()) & self._catalogue_of(version):
            return "personalized"  # a new user with feedback on catalogue items
        if user not in self.feedback_of:
            return "popular" if user.startswith("ghost-") else None
        return None

    def _catalogue_users(self, version: str) -> frozenset[str]:
        key = f"users:{version}"
        if key not in self.catalogues:
            path = self.d.bundles_root / version / "users.json"
            ids = json.loads(path.read_text()) if path.exists() else []
            self.catalogues[key] = frozenset(str(u) for u in ids)
        return self.catalogues[key]

    def user_recs(
        self,
        rng: random.Random,
        client: httpx.Client,
        user: str,
        *,
        plain: bool = False,
        n: int | None = None,
    ) -> list[str]:
        n = n or rng.choice([5, 10, 10, 20, 20, 50])
        params: dict[str, Any] = {"n": n}
        categories: list[str] = []
        exclude: list[str] = []
        if not plain:
            if rng.random() < 0.25:
                categories = rng.sample(self.catalogue.genres[:12], rng.choice([1, 1, 2]))
                params["category"] = categories
            if rng.random() < 0.1:
                params["explain"] = "true"
            if rng.random() < 0.1:
                exclude = rng.sample(self.catalogue.popular[:60], 3)
                params["exclude"] = exclude
        answer = self.call(client, "GET", f"/v1/users/{user}/recommendations", params=params)
        strategy = None
        if answer.ok and isinstance(answer.body, dict):
            strategy = self._user_strategy(user, str(answer.body.get("model_version")))
        return self.check_recs(
            answer, n=n, user=user, categories=categories, exclude=exclude, strategy=strategy
        )

    def taste_text(self, rng: random.Random) -> str:
        genres = rng.sample(list(GENRE_WORDS), 2)
        title = self.catalogue.titles[rng.choice(self.catalogue.popular[:200])]
        return (
            f"I like {genres[0].lower()} films with {GENRE_WORDS[genres[0]]}, sometimes "
            f"{genres[1].lower()} too; I enjoyed {title}."
        )

    def alive_catalogue_items(self, rng: random.Random, k: int, top: int = 300) -> list[str]:
        pool = [i for i in self.catalogue.popular[:top] if i not in self.deleted]
        return rng.sample(pool, min(k, len(pool)))

    def cold_start(self, rng: random.Random, client: httpx.Client) -> None:
        body: dict[str, Any] = {"n": rng.choice([10, 20])}
        mode = rng.random()
        liked: list[str] = []
        if mode < 0.7:
            liked = self.alive_catalogue_items(rng, rng.randint(1, 5))
            if self.added and rng.random() < 0.15:
                liked.append(rng.choice(sorted(self.added)))
            body["liked_items"] = liked
        if mode >= 0.4:
            body["text"] = self.taste_text(rng)
        categories: list[str] = []
        if rng.random() < 0.25:
            categories = rng.sample(self.catalogue.genres[:12], 1)
            body["categories"] = categories
        if rng.random() < 0.1:
            body["explain"] = True
        answer = self.call(client, "POST", "/v1/recommendations", body=body)
        strategy = "personalized" if any(i in self.catalogue_items for i in liked) else None
        self.check_recs(answer, n=body["n"], categories=categories, liked=liked, strategy=strategy)

    def filler(self, rng: random.Random, client: httpx.Client) -> None:
        """One read request, as a user population would make them."""
        roll = rng.random()
        if roll < 0.55:
            users = self.catalogue.users
            user = users[min(len(users) - 1, int(rng.paretovariate(1.2)) - 1)] if rng.random() < 0.3 else None
            self.user_recs(rng, client, user or rng.choice(users))
        elif roll < 0.78:
            self.cold_start(rng, client)
        elif roll < 0.95 and self.new_users:
            self.user_recs(rng, client, rng.choice(self.new_users), plain=rng.random() < 0.7)
        else:
            self.user_recs(rng, client, f"ghost-{rng.randrange(10**9)}", plain=True, n=10)

    # ------------------------------------------------------------------ writes
    def send_feedback(self, client: httpx.Client, events: list[dict[str, Any]]) -> bool:
        answer = self.call(client, "POST", "/v1/feedback", body=events)
        if not answer.ok:
            return False
        if answer.body != {"accepted": len(events)}:
            self.violation(
                f"feedback not fully accepted ({len(events)} sent)", answer.request, answer.short()
            )
            return False
        for e in events:
            self.feedback_of[e["user_id"]].add(e["item_id"])
            self.acked_feedback[(e["user_id"], e["item_id"], e["type"], e.get("value"))] += 1
            self.pending_feedback.append(e)
        self.counts["feedback_events"] += len(events)
        return True

    def _event(self, rng: random.Random, user: str, item: str) -> dict[str, Any]:
        kind = rng.choice(FEEDBACK_TYPES)
        event: dict[str, Any] = {"user_id": user, "item_id": item, "type": kind}
        if kind == "rating":
            event["value"] = float(rng.randint(1, 5))
        return event

    def new_user_session(self, user: str | None = None) -> None:
        """A new user (no attributes) arrives, looks, gives feedback in a few batches, looks again."""
        rng, client = self.rng, self.client()
        user = user or f"nu-{self.day}-{rng.randrange(16**8):08x}"
        self.new_users.append(user)
        self.counts["new_users"] += 1
        shown = self.user_recs(rng, client, user, plain=True, n=10)
        remaining = self.cfg.feedback_per_new_user
        first = True
        while remaining > 0:
            size = min(remaining, rng.randint(2, 4))
            items = [rng.choice(shown) for _ in range(size)] if shown else []
            items = [i for i in items if i not in self.deleted]
            while len(items) < size:
                items.append(self.alive_catalogue_items(rng, 1, 400)[0])
            if self.added and rng.random() < 0.2:
                items[-1] = rng.choice(sorted(self.added))
            events = [self._event(rng, user, i) for i in items]
            if first:  # every new user likes at least one catalogue item
                events[0] = {
                    "user_id": user,
                    "item_id": self.alive_catalogue_items(rng, 1)[0],
                    "type": "like",
                }
                first = False
            self.send_feedback(client, events)
            remaining -= size
            shown = self.user_recs(rng, client, user, plain=rng.random() < 0.5, n=10)

    def known_feedback(self) -> None:
        rng, client = self.rng, self.client()
        user = rng.choice(self.catalogue.users)
        shown = self.user_recs(rng, client, user, plain=True, n=10)
        if not shown:
            return
        clicked = shown[: rng.randint(1, 2)]
        self.send_feedback(client, [{"user_id": user, "item_id": i, "type": "click"} for i in clicked])
        self.user_recs(rng, client, user, plain=True, n=10)

    def junk_item(self, item_id: str, genre: str) -> NewItem:
        kind = JUNK_KINDS[self.junk_counter % len(JUNK_KINDS)]
        self.junk_counter += 1
        if kind == "near_empty":
            return NewItem(item_id, kind, "x", ".", [genre])
        if kind == "huge":
            words = GENRE_WORDS.get(genre, "a film").split()
            text = " ".join(words[i % len(words)] for i in range(2000))[:4000]
            return NewItem(item_id, kind, f"Endless {genre} Saga", text, [genre])
        if kind == "odd_unicode":
            text = (
                "Z\u0335\u0322a\u0336l\u0337g\u0338o\u0334 \u200b\u200d\ufeff film "
                "\U0001d518\U0001d52b\U0001d526 "
                "\u00a0tab\there\nnew line \u2028 sep \u00e9\u0301 \U0001f9ec"  # control characters: probes
            )
            return NewItem(
                item_id, kind, "\u0305T\u0336i\u0337t\u0338l\u0335e \U0001d54b", text, [genre, "Ciné ✨"]
            )
        text = (
            "\u202eفيلم رائع عن الفضاء 🎬🍿 סרט על חלל עם שחקנים 👩\u200d🚀👨\u200d👩\u200d👧 "
            "\u202c mixed English words 🇫🇷🏳️\u200d🌈"
        )
        return NewItem(item_id, kind, "🚀 فيلم 🎬", text, [genre])

    def upsert_new_item(self, junk: bool) -> None:
        rng, client = self.rng, self.client()
        genre = rng.choice(
            [g for g in self.catalogue.genres[:12] if g in GENRE_WORDS] or self.catalogue.genres
        )
        item_id = f"new-{self.day}-{rng.randrange(16**6):06x}"
        if junk:
            item = self.junk_item(item_id, genre)
        else:
            title = f"The {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} ({rng.randint(1990, 2026)})"
            text = (
                f"A {genre.lower()} film with {GENRE_WORDS.get(genre, 'a memorable story')}. "
                + rng.choice(
                    ["Critics loved it.", "A cult favourite.", "Shot on location.", "Based on a novel."]
                )
            )
            item = NewItem(item_id, "normal", title, text, [genre])
        body = {"title": item.title, "text": item.text, "categories": item.categories}
        answer = self.call(client, "PUT", f"/v1/items/{item_id}", body=body, expect=(201,))
        if answer.status != 201:
            return
        self.added[item_id] = item
        self.items_today.append(item_id)
        self.pending_upserts.add(item_id)
        self.acked_catalog[("item_upsert", item_id)] += 1
        self.counts["items_new"] += 1
        self.counts["items_junk"] += int(junk)
        self.check_recommendable(item, "after the upsert")

    def check_recommendable(self, item: NewItem, when: str) -> None:
        """The item is in the top 20 of a cold-start request made of its own text and first category
        (asked for the top 100, to record its rank)."""
        body = {"text": item.description[:4000], "categories": item.categories[:1], "n": 100}
        answer = self.call(self.client(), "POST", "/v1/recommendations", body=body)
        items = self.check_recs(answer, n=100, categories=item.categories[:1])
        if not answer.ok:
            return
        rank = items.index(item.item_id) + 1 if item.item_id in items else 101
        self.new_item_ranks.append(rank)
        if rank > 20:
            shown = dict(answer.body, items=answer.body["items"][:3]) if isinstance(answer.body, dict) else {}
            self.violation(
                f"new item not recommendable: {item.item_id} ({item.kind}) ranks "
                f"{rank if rank <= 100 else '>100'} for a request made of its own text and category ({when})",
                answer.request,
                json.dumps(shown, ensure_ascii=False)[:600],
            )

    def edit_catalogue_item(self) -> None:
        rng, client = self.rng, self.client()
        item = self.alive_catalogue_items(rng, 1, 500)[0]
        cats = self.catalogue.categories[item] or ["Drama"]
        body = {
            "title": self.catalogue.titles[item],
            "text": f"Restored edition. {GENRE_WORDS.get(cats[0], 'A classic')}.",
            "categories": cats,
        }
        answer = self.call(client, "PUT", f"/v1/items/{item}", body=body)
        if answer.ok:
            self.pending_upserts.add(item)
            self.acked_catalog[("item_upsert", item)] += 1
            self.counts["items_edited"] += 1

    def delete_item(self) -> None:
        """Alternately a popular catalogue item (so a reappearance shows) and an item added through
        the API."""
        rng, client = self.rng, self.client()
        added = sorted(self.added)
        if self.deletion_counter % 2 == 1 and added:
            item = rng.choice(added)
        else:
            item = self.alive_catalogue_items(rng, 1, 40)[0]
        self.deletion_counter += 1
        answer = self.call(client, "DELETE", f"/v1/items/{item}", expect=(204,))
        if answer.status != 204:
            return
        self.deleted.add(item)
        self.added.pop(item, None)
        self.acked_catalog[("item_delete", item)] += 1
        self.counts["deletions"] += 1
        self.call(client, "DELETE", f"/v1/items/{item}", expect=(404,))
        self.call(client, "POST", "/v1/recommendations", body={"liked_items": [item]}, expect=(422,))
        self.call(
            client,
            "POST",
            "/v1/feedback",
            body=[{"user_id": "1", "item_id": item, "type": "click"}],
            expect=(422,),
        )

    def probes(self) -> None:
        """Unknown ids and invalid requests: 4xx (or, for an unknown user, popular items), never 5xx."""
        rng, client = self.rng, self.client()
        ghost_item = f"no-such-item-{rng.randrange(10**6)}"
        user = rng.choice(self.catalogue.users)
        cases: list[tuple[str, str, dict[str, Any] | None, Any, tuple[int, ...]]] = [
            (
                "POST",
                "/v1/feedback",
                None,
                [{"user_id": user, "item_id": ghost_item, "type": "like"}],
                (422,),
            ),
            ("POST", "/v1/recommendations", None, {"liked_items": ["50", ghost_item]}, (422,)),
            ("DELETE", f"/v1/items/{ghost_item}", None, None, (404,)),
            ("PUT", f"/v1/items/{ghost_item}", None, {"title": "", "text": "x"}, (422,)),
            ("PUT", f"/v1/items/{ghost_item}", None, {"title": "t", "text": "   "}, (422,)),
            (
                "PUT",
                f"/v1/items/{ghost_item}",
                None,
                {"title": "t", "text": "bell \u0007 nul \u0000"},
                (422,),
            ),
            ("GET", f"/v1/users/{user}/recommendations", {"n": 0}, None, (422,)),
            (
                "GET",
                f"/v1/users/{user}/recommendations",
                {"n": 101},
                None,
                (422,),
            ),  # validation errors are 422 everywhere
            ("GET", f"/v1/users/{'u' * 129}/recommendations", None, None, (422,)),
            ("POST", "/v1/feedback", None, [], (422,)),
            ("POST", "/v1/feedback", None, [{"user_id": user, "item_id": "50", "type": "Bad Type!"}], (422,)),
            ("POST", "/v1/feedback", None, [{"user_id": user, "item_id": "50"}], (422,)),
            ("POST", "/v1/recommendations", None, {"text": "   "}, (422,)),
            ("POST", "/v1/recommendations", None, {"text": "x" * 4001}, (422,)),
            ("POST", "/v1/recommendations", None, {"n": 5}, (422,)),
            ("POST", "/v1/recommendations", None, {"liked_items": ["50"], "bogus": 1}, (422,)),
            ("GET", "/v1/no-such-route", None, None, (404,)),
        ]
        for method, path, params, body, expect in rng.sample(cases, min(6, len(cases))):
            self.call(client, method, path, params=params, body=body, expect=expect)
        self.counts["probes"] += 1
        self.user_recs(rng, client, f"ghost-{rng.randrange(10**9)}", plain=True, n=10)

    def burst(self) -> None:
        """A short concurrent burst of reads from a thread pool (each thread its own keep-alive client)."""
        seeds = [self.rng.randrange(2**32) for _ in range(self.cfg.burst_requests)]

        def one(seed: int) -> None:
            self.filler(random.Random(seed), self.client())

        with concurrent.futures.ThreadPoolExecutor(max_workers=self.cfg.burst_threads) as pool:
            list(pool.map(one, seeds))
        self.counts["bursts"] += 1

    def event(self, kind: str, arg: str) -> None:
        if kind == "new_user":
            self.new_user_session()
        elif kind == "known_feedback":
            self.known_feedback()
        elif kind == "upsert":
            self.upsert_new_item(junk=arg == "junk")
        elif kind == "edit":
            self.edit_catalogue_item()
        elif kind == "delete":
            self.delete_item()
        elif kind == "burst":
            self.burst()
        elif kind == "probes":
            self.probes()

    @contextlib.contextmanager
    def background_reads(self) -> Iterator[None]:
        """Reads going on in a thread (while a job runs): the service must keep answering."""
        stop = threading.Event()
        rng = random.Random(self.rng.randrange(2**32))

        def loop() -> None:
            while not stop.is_set():
                self.filler(rng, self.client())
                time.sleep(0.02)

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=120)

    # ------------------------------------------------------------------ steps and invariants
    def violation(self, what: str, request: str, answer: str) -> None:
        found = Violation(f"day {self.day} {self.step}", what, request, answer)
        with self.lock:
            self.violations.append(found)
        self.say(found.render())

    def end_step(self, what: str, outcome: str) -> None:
        """The invariants checked after every step, then a timeline line; stops on a violation."""
        self.step = what
        self.check_logs()
        self.check_pointer_and_ready()
        self.check_memory()
        found = len(self.violations) - sum(t["violations"] for t in self.timeline)
        elapsed = time.monotonic() - self.started
        self.timeline.append(
            {"t_s": round(elapsed, 1), "day": self.day, "step": what, "outcome": outcome, "violations": found}
        )
        flag = f"  ** {found} violation(s)" if found else ""
        self.say(f"{elapsed:8.1f}s  day {self.day}  {what:<44} {outcome}{flag}")
        self.step = "next step"
        if found and self.cfg.fail_fast:
            raise ReplayFailedError(
                f"{len(self.violations)} violation(s) by {what!r}:\n"
                + "\n".join(v.render() for v in self.violations[-20:])
            )

    def check_logs(self) -> None:
        """Every acknowledged feedback and catalogue event is in its log (none lost)."""
        events, reset = self.fb_follower.poll()
        if reset:
            self.logged_feedback.clear()
        for e in events:
            key = (str(e.get("user_id")), str(e.get("item_id")), str(e.get("type")), e.get("value"))
            self.logged_feedback[key] += 1
        missing = self.acked_feedback - self.logged_feedback
        if missing:
            self.violation(
                f"{sum(missing.values())} acknowledged feedback event(s) missing from the feedback log",
                str(self.d.feedback_log),
                repr(list(missing.items())[:10]),
            )
            self.acked_feedback -= missing  # reported once
        events, reset = self.cat_follower.poll()
        if reset:
            self.logged_catalog.clear()
        for e in events:
            self.logged_catalog[(str(e.get("type")), str(e.get("item_id")))] += 1
        lost = self.acked_catalog - self.logged_catalog
        if lost:
            self.violation(
                f"{sum(lost.values())} acknowledged item change(s) missing from the catalogue log",
                str(self.d.catalog_log),
                repr(list(lost.items())[:10]),
            )
            self.acked_catalog -= lost

    def check_pointer_and_ready(self) -> None:
        try:
            pointed = resolve_pointer(self.d.bundles_root).name
        except Exception as exc:
            self.violation("the current pointer does not resolve", str(self.d.bundles_root), str(exc))
            return
        if pointed != self.expected_version:
            self.violation(
                f"current points at {pointed}, the harness expects {self.expected_version}",
                str(self.d.bundles_root),
                pointed,
            )
        if self.service is None or self.service.pid is None:
            return
        answer = self.call(self.client(), "GET", "/readyz")
        if answer.ok and isinstance(answer.body, dict):
            problems = []
            if answer.body.get("status") != ("ready" if self.redis.answers() else "degraded"):
                problems.append(f"readyz status {answer.body.get('status')!r}")
            served = answer.body.get("model_version")
            if served != pointed and not ({served, ANY_VERSION} & self.transition):
                problems.append(f"readyz serves {answer.body.get('model_version')}, current is {pointed}")
            for problem in problems:
                self.violation(problem, answer.request, answer.short())

    def _sample_memory(self) -> None:
        while not self._stop_sampler.wait(0.5):
            pid = self.service.pid if self.service is not None else None
            if pid is None:
                continue
            rss = tree_rss_mb(pid)
            self.rss_now = rss
            self.rss_by_day[self.day] = max(self.rss_by_day.get(self.day, 0.0), rss)

    def check_memory(self) -> None:
        if self.service is not None and self.service.pid is not None:
            rss = tree_rss_mb(self.service.pid)
            self.rss_by_day[self.day] = max(self.rss_by_day.get(self.day, 0.0), rss)
        base = self.rss_by_day.get(1, 0.0)
        if self.day <= 1 or base <= 0:
            return
        worst = max(v for d, v in self.rss_by_day.items() if d > 1)
        if worst > self.cfg.rss_limit * base:
            self.violation(
                f"service memory grew to {worst:.0f} MiB, more than {self.cfg.rss_limit}x day 1 "
                f"({base:.0f} MiB)",
                "RSS of the service's processes (/proc)",
                json.dumps({str(d): round(v, 1) for d, v in sorted(self.rss_by_day.items())}),
            )
            self.rss_by_day = {d: v for d, v in self.rss_by_day.items() if d <= 1}  # reported once

    def check_catalogue(self, when: str) -> None:
        """Every item acknowledged through the API is known to the served bundle; every deleted one
        is not (a cold-start request liking them is 200, resp. 422 naming exactly them)."""
        client = self.client()
        alive = sorted(self.added)
        for start in range(0, len(alive), 200):
            chunk = alive[start : start + 200]
            answer = self.call(
                client, "POST", "/v1/recommendations", body={"liked_items": chunk, "n": 1}, expect=(200, 422)
            )
            if answer.status == 422:
                unknown = answer.body.get("error", {}).get("details", {}).get("unknown", [])
                self.violation(
                    f"{len(unknown)} item(s) added through the API are unknown to the service ({when})",
                    answer.request,
                    answer.short(),
                )
        gone = sorted(self.deleted)
        for start in range(0, len(gone), 200):
            chunk = gone[start : start + 200]
            answer = self.call(
                client, "POST", "/v1/recommendations", body={"liked_items": chunk, "n": 1}, expect=(200, 422)
            )
            unknown = (
                set(answer.body.get("error", {}).get("details", {}).get("unknown", []))
                if answer.status == 422 and isinstance(answer.body, dict)
                else set()
            )
            if unknown != set(chunk):
                self.violation(
                    f"deleted item(s) known to the service again ({when}): {sorted(set(chunk) - unknown)}",
                    answer.request,
                    answer.short(),
                )

    # ------------------------------------------------------------------ service and Redis
    def wait_ready(self, version: str, timeout: float) -> float:
        """Wait until /readyz is 200 and serves ``version``. Returns the seconds it took."""
        assert self.service is not None
        started = time.monotonic()
        last = "no answer"
        while time.monotonic() - started < timeout:
            if self.service.proc is not None and self.service.proc.poll() is not None:
                last = f"the service exited with {self.service.proc.returncode} (see {self.service.log_path})"
                break
            try:
                response = httpx.get(f"{self.service.url}/readyz", timeout=5)
                last = f"{response.status_code} {response.text[:300]}"
                if response.status_code == 200 and response.json().get("model_version") == version:
                    return time.monotonic() - started
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}"
            time.sleep(0.2)
        self.violation(f"the service did not come up serving {version}", "GET /readyz", last)
        raise ReplayFailedError(f"the service did not come up serving {version}: {last}")

    def service_restart(self, why: str) -> None:
        assert self.service is not None
        self.reset_clients()
        stopped = self.service.stop()
        self.service.start()
        ready = self.wait_ready(self.expected_version, 180)
        self.counts["service_restarts"] += 1
        # what was acknowledged before the restart still holds
        for user in self.new_users[-10:]:
            self.user_recs(self.rng, self.client(), user, plain=True, n=20)
        self.check_catalogue("after a service restart")
        self.end_step(why, f"stopped in {stopped:.1f} s, up on {self.expected_version} in {ready:.1f} s")

    def redis_restart(self) -> None:
        self.redis.stop()
        for _ in range(40):
            self.filler(self.rng, self.client())
        answer = self.call(self.client(), "GET", "/readyz")
        degraded = isinstance(answer.body, dict) and answer.body.get("status") == "degraded"
        if not degraded:
            self.violation("readyz does not say degraded while Redis is down", answer.request, answer.short())
        self.redis.start()
        started = time.monotonic()
        while time.monotonic() - started < 30:
            answer = self.call(self.client(), "GET", "/readyz")
            if isinstance(answer.body, dict) and answer.body.get("status") == "ready":
                break
            time.sleep(0.2)
        back = time.monotonic() - started
        for _ in range(40):
            self.filler(self.rng, self.client())
        self.counts["redis_restarts"] += 1
        self.end_step("fault: Redis restart", f"degraded while down: {degraded}; ready again in {back:.1f} s")

    # ------------------------------------------------------------------ jobs
    def run_job(self, argv: list[str], label: str, extra_env: dict[str, str] | None = None) -> JobResult:
        """A job as a subprocess (working directory: the deployment), with reads going on."""
        logs = self.d.root / "jobs"
        logs.mkdir(exist_ok=True)
        stem = f"{len(list(logs.iterdir())) // 2:03d}-{label}"
        out_path, err_path = logs / f"{stem}.out", logs / f"{stem}.err"
        started = time.monotonic()
        with self.background_reads(), out_path.open("wb") as out, err_path.open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, *argv],
                env={**self.env, **(extra_env or {})},
                cwd=self.d.root,
                stdout=out,
                stderr=err,
            )
            status, usage = 0, None
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() - started > self.cfg.job_timeout_s:
                    proc.kill()
                    pid, status, usage = os.wait4(proc.pid, 0)
                    break
                time.sleep(0.1)
            proc.returncode = code = os.waitstatus_to_exitcode(status)
        if code < 0:
            code = 128 - code
        return JobResult(
            code=code,
            seconds=time.monotonic() - started,
            max_rss_mb=(usage.ru_maxrss / 1024) if usage is not None else 0.0,
            stdout=out_path.read_text(errors="replace"),
            stderr=err_path.read_text(errors="replace"),
        )

    def refresh_strategy(self) -> str:
        if self.cfg.refresh_strategy != "deployment":
            return self.cfg.refresh_strategy
        manifest = read_manifest(resolve_pointer(self.d.bundles_root))
        return manifest.profiles.strategy if manifest.profiles.strategy not in ("", "extractive") else "proex"

    def nightly_refresh(self, kill: bool) -> None:
        argv = ["-m", "offline_jobs.cli.jobs", "refresh"]
        env = {"PROFILEREC_REFRESH_STRATEGY": self.refresh_strategy()}
        if kill:
            crashed = self.run_job(argv, "refresh-killed", {**env, CRASH_ENV: self.cfg.kill_refresh_at})
            self.counts["killed_refreshes"] += 1
            if crashed.code != EXIT_KILLED:
                self.violation(
                    f"the refresh killed at {self.cfg.kill_refresh_at} exited {crashed.code}, "
                    f"not {EXIT_KILLED}",
                    f"profilerec-jobs refresh ({CRASH_ENV}={self.cfg.kill_refresh_at})",
                    crashed.stderr[-1500:],
                )
            self.end_step(
                f"fault: refresh killed at {self.cfg.kill_refresh_at}",
                f"exit {crashed.code} after {crashed.seconds:.1f} s",
            )
            for _ in range(2):  # new events arrive before the rerun
                self.new_user_session()
            self.upsert_new_item(junk=False)
            self.end_step("events after the killed refresh", "2 new users with feedback, 1 new item")
        result = self.run_job(argv, "refresh", env)
        self.counts["refreshes"] += 1
        outcome = self.check_refresh(result)
        self.refresh_outcomes.append(outcome)
        self.end_step(
            "nightly refresh" + (" (rerun)" if kill else ""),
            f"exit {result.code}, {outcome.get('status')}: {outcome.get('users', 0)} users, "
            f"{outcome.get('items', 0)} items, {outcome.get('quarantined', 0)} quarantined, "
            f"{result.seconds:.1f} s, peak {result.max_rss_mb:.0f} MiB",
        )

    def check_refresh(self, result: JobResult) -> dict[str, Any]:
        from offline_jobs.refresh.live_data import is_positive

        outcome: dict[str, Any] = {
            "code": result.code,
            "seconds": result.seconds,
            "rss_mb": result.max_rss_mb,
        }
        request = "profilerec-jobs refresh"
        if result.code != 0:
            self.violation(f"the nightly refresh exited {result.code}", request, result.stderr[-2000:])
            outcome["status"] = "failed"
            return outcome
        report = json.loads((self.d.state_dir / "last_report.json").read_text())
        outcome.update(
            status=report["status"],
            users=len(report["users"]),
            items=len(report["items"]),
            quarantined=len(report["quarantined"]),
        )
        users = {str(e["user_id"]) for e in self.pending_feedback if is_positive(e)}
        items = {str(e["item_id"]) for e in self.pending_feedback if is_positive(e)} | self.pending_upserts
        quarantined = report["quarantined"]
        q_users = {q["entity_id"] for q in quarantined if q["entity_type"] == "user"}
        q_items = {q["entity_id"] for q in quarantined if q["entity_type"] == "item"}
        short = json.dumps({k: report[k] for k in ("status", "users", "items", "quarantined")})[:1500]
        for kind, expected, done, q in (
            ("users", users, set(report["users"]), q_users),
            ("items", items, set(report["items"]), q_items),
        ):
            if done != expected - q:
                self.violation(
                    f"the refresh report does not cover exactly the changed {kind}: missing "
                    f"{sorted(expected - q - done)[:20]}, unexpected {sorted(done - expected)[:20]}",
                    request,
                    short,
                )
            if q - expected:
                self.violation(
                    f"the refresh quarantined unchanged {kind}: {sorted(q - expected)}", request, short
                )
        others = [q for q in quarantined if q["entity_type"] not in ("user", "item")]
        if others:
            self.violation(
                "the refresh quarantined log records the service wrote", request, json.dumps(others)[:1500]
            )
        if (users or items) and report["status"] == "noop":
            self.violation("the refresh was a no-op with changed entities", request, short)
        if quarantined:
            path = self.d.state_dir / "dead_letter.jsonl"
            dead = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
            explained = {
                (x["entity_type"], x["entity_id"])
                for x in dead
                if x.get("run_started_at") == report["started_at"] and x.get("reason")
            }
            for q in quarantined:
                if (q["entity_type"], q["entity_id"]) not in explained:
                    self.violation(
                        f"quarantined {q['entity_type']} {q['entity_id']} is not explained in the "
                        "dead-letter file",
                        str(path),
                        json.dumps(q)[:800],
                    )
            outcome["quarantined_reasons"] = sorted({str(q.get("reason"))[:120] for q in quarantined})
        self.pending_feedback = []
        self.pending_upserts = set()
        # the refresh landed: refreshed new users have profiles, today's new items are still recommendable
        client = self.client()
        known_new = set(self.new_users)
        refreshed_new = [u for u in report["users"] if u in known_new]
        for user in refreshed_new[-5:]:
            answer = self.call(
                client, "GET", f"/v1/users/{user}/recommendations", params={"n": 10, "explain": "true"}
            )
            self.check_recs(answer, n=10, user=user, strategy="personalized")
            if answer.ok and not (answer.body or {}).get("user_profiles"):
                self.violation(
                    f"refreshed new user {user} has no profiles in the service",
                    answer.request,
                    answer.short(),
                )
        for item_id in [i for i in self.items_today if i in self.added][-6:]:
            self.check_recommendable(self.added[item_id], "after the nightly refresh")
        return outcome

    def weekly_retrain(self) -> None:
        cfg = self.cfg
        live = resolve_pointer(self.d.bundles_root).name
        before = set(list_versions(self.d.bundles_root))
        argv = [
            "-m", "offline_jobs.cli.pipeline", "retrain", "--epochs", str(cfg.retrain_epochs),
            "--eval-every", "1", "--patience", "3", "--tolerance", str(cfg.retrain_tolerance),
        ]  # fmt: skip
        self.transition = {ANY_VERSION}  # the retrain promotes by itself when the gate passes
        result = self.run_job(argv, "retrain")
        new = sorted(set(list_versions(self.d.bundles_root)) - before)
        candidate = new[-1] if new else None
        self.transition = set()
        if result.code == 0:
            outcome = "promoted"
            if candidate is not None:  # checked by pointer_moved below
                self.expected_version, self.transition = candidate, {live, candidate}
        elif result.code == EXIT_REFUSED:
            outcome = "refused by the gate"
        else:
            outcome = f"failed (exit {result.code})"
            self.violation(
                f"the retrain exited {result.code}", "profilerec-pipeline retrain", result.stderr[-2000:]
            )
        gate = self._gate_figures()
        self.retrain_outcomes.append(outcome)
        self.end_step(
            "weekly gated retrain",
            f"{outcome}: candidate {candidate} {gate}, {result.seconds:.0f} s, "
            f"peak {result.max_rss_mb:.0f} MiB",
        )
        if candidate is None:
            return
        if outcome == "promoted":
            self.counts["promotions"] += 1
            self.pointer_moved(live, candidate, "promotion by the retrain")
        else:  # exercise the rollback on the candidate, promoted by hand
            self.move_pointer(
                ["publish", str(self.d.bundles_root / candidate)], live, candidate, "manual promotion"
            )
            self.counts["promotions"] += 1
        self.move_pointer(["rollback"], candidate, live, "rollback")
        self.counts["rollbacks"] += 1
        # traffic while rolled back: feedback, a new user, an item added and one deleted
        self.new_user_session()
        self.upsert_new_item(junk=False)
        self.delete_item()
        for _ in range(100):
            self.filler(self.rng, self.client())
        self.end_step("traffic while rolled back", "1 new user, 1 new item, 1 deletion, 100 reads")
        self.move_pointer(["publish", str(self.d.bundles_root / candidate)], live, candidate, "roll-forward")
        self.counts["roll_forwards"] += 1

    def move_pointer(self, args: list[str], old: str, new: str, what: str) -> None:
        """``profilerec-pipeline <args>`` (reads going on, either bundle may answer), then the checks."""
        self.transition = {old, new}
        self.pipeline(args, args[0])
        self.pointer_moved(old, new, what)

    def _gate_figures(self) -> str:
        reports = sorted((self.d.work_dir / "rollouts").glob("*.json"), key=lambda p: p.stat().st_mtime)
        if not reports:
            return ""
        gate = json.loads(reports[-1].read_text()).get("gate", {})
        return f"(Recall@20 {gate.get('candidate', 0):.4f} vs live {gate.get('live', 0):.4f})"

    def pipeline(self, args: list[str], label: str) -> JobResult:
        result = self.run_job(["-m", "offline_jobs.cli.pipeline", *args], label)
        if result.code != 0:
            self.violation(
                f"profilerec-pipeline {args[0]} exited {result.code}", " ".join(args), result.stderr[-2000:]
            )
        return result

    def pointer_moved(self, old: str, new: str, what: str) -> None:
        """After a promotion or a rollback: pointers, status, the running service, a restarted one."""
        self.transition = {old, new}
        problems = []
        try:
            current = resolve_pointer(self.d.bundles_root).name
            if current != new:
                problems.append(f"current -> {current}, expected {new}")
            resolve_pointer(self.d.bundles_root, "previous")
        except Exception as exc:
            problems.append(f"a pointer does not resolve: {exc}")
        status = self.run_job(["-m", "offline_jobs.cli.pipeline", "status"], "status")
        try:
            reported = json.loads(status.stdout)["current"]["version"]
        except (ValueError, KeyError, TypeError):
            reported = None
        if status.code != 0 or reported != new:
            problems.append(f"profilerec-pipeline status: exit {status.code}, current {reported}")
        for problem in problems:
            self.violation(problem, f"{what}: {old} -> {new}", status.stdout[-800:] + status.stderr[-800:])
        self.expected_version = new
        switched = self.wait_for_version(new)
        self.switch_seconds.append(switched)
        self._load_seen(new)
        self.check_catalogue(f"after the {what}")
        self.end_step(what, f"{old} -> {new}; served by every worker after {switched:.1f} s")
        self.service_restart(f"restart after the {what}")

    def wait_for_version(self, version: str) -> float:
        """Until ``version`` answers on fresh connections (both workers), on /readyz and in answers."""
        assert self.service is not None
        started = time.monotonic()
        needed = 6 * self.cfg.workers
        streak = 0
        user = self.catalogue.users[0]
        versions: set[Any] = set()
        with httpx.Client(
            base_url=self.service.url, timeout=30, headers={"Connection": "close", "X-API-Key": API_KEY}
        ) as fresh:
            while time.monotonic() - started < self.cfg.switch_timeout_s:
                ready = self.call(fresh, "GET", "/readyz")
                answer = self.call(fresh, "GET", f"/v1/users/{user}/recommendations", params={"n": 5})
                self.check_recs(answer, n=5, user=user)
                versions = {
                    (ready.body or {}).get("model_version") if isinstance(ready.body, dict) else None,
                    (answer.body or {}).get("model_version") if isinstance(answer.body, dict) else None,
                }
                if versions == {version}:
                    streak += 1
                    if streak >= needed:
                        self.transition = set()
                        return time.monotonic() - started
                else:
                    streak = 0
                    time.sleep(0.1)
        self.violation(
            f"the service does not serve {version} on every worker after {self.cfg.switch_timeout_s:.0f} s",
            "GET /readyz and a recommendation on fresh connections",
            f"last versions seen: {versions}",
        )
        self.transition = set()
        return time.monotonic() - started

    # ------------------------------------------------------------------ the summary
    def summary(self) -> dict[str, Any]:
        c = self.counts
        ok = sum(1 for o in self.refresh_outcomes if o.get("code") == 0)
        return {
            "days": self.cfg.days,
            "requests": c["requests"],
            "requests_5xx": c["5xx"],
            "requests_4xx": c["4xx"],
            "transport_errors": c["transport_errors"],
            "4xx_by_cause": dict(sorted(self.causes_4xx.items())),
            "feedback_events": c["feedback_events"],
            "new_users": c["new_users"],
            "feedback_users_new": len({u for u in self.new_users if u in self.feedback_of}),
            "item_upserts": c["items_new"] + c["items_edited"],
            "items_new": c["items_new"],
            "items_junk": c["items_junk"],
            "items_edited": c["items_edited"],
            "deletions": c["deletions"],
            "bursts": c["bursts"],
            "refreshes_ok": ok,
            "refreshes": c["refreshes"],
            "refresh_max_s": round(max((o["seconds"] for o in self.refresh_outcomes), default=0.0), 1),
            "refresh_max_rss_mb": round(max((o["rss_mb"] for o in self.refresh_outcomes), default=0.0), 1),
            "quarantined": sum(o.get("quarantined", 0) for o in self.refresh_outcomes),
            "retrain": "; ".join(self.retrain_outcomes) or "none",
            "promotions": c["promotions"],
            "rollbacks": c["rollbacks"],
            "roll_forwards": c["roll_forwards"],
            "redis_restarts": c["redis_restarts"],
            "killed_refreshes": c["killed_refreshes"],
            "service_restarts": c["service_restarts"],
            "unplanned_service_restarts": c["unplanned_service_restarts"],
            "max_switch_s": round(max(self.switch_seconds, default=0.0), 1),
            "violations": len(self.violations),
            "violations_by_kind": dict(
                collections.Counter(v.what.split(":")[0][:80] for v in self.violations).most_common()
            ),
            "new_item_rank_median": sorted(self.new_item_ranks)[len(self.new_item_ranks) // 2]
            if self.new_item_ranks
            else 0,
            "new_items_top20": sum(r <= 20 for r in self.new_item_ranks),
            "new_item_checks": len(self.new_item_ranks),
            "day1_rss_mb": round(self.rss_by_day.get(1, 0.0), 1),
            "max_rss_mb": round(max(self.rss_by_day.values(), default=0.0), 1),
            "wall_s": round(time.monotonic() - self.started, 1),
            "table": self.day_rows,
        }


def print_summary(summary: dict[str, Any]) -> None:
    skip = ("table", "4xx_by_cause", "violations_by_kind")
    rows = [{"figure": k, "value": v} for k, v in summary.items() if k not in skip]
    rows += [{"figure": f"4xx {cause}", "value": n} for cause, n in summary["4xx_by_cause"].items()]
    rows += [
        {"figure": f"violations: {kind}", "value": n} for kind, n in summary["violations_by_kind"].items()
    ]
    print_table(summary["table"], "\nper day")
    print_table(rows, "\nsummary")


# ReplayConfig fields settable from the command line: (field, type, help)
REPLAY_OPTIONS: tuple[tuple[str, type, str], ...] = (
    ("days", int, "simulated days"),
    ("requests_per_day", int, "recommendation requests per day"),
    ("new_users_per_day", int, "new (cold-start) users per day"),
    ("feedback_per_new_user", int, "feedback events of each new user"),
    ("known_feedback_per_day", int, "feedback events of known users per day"),
    ("items_per_day", int, "new catalogue items per day"),
    ("junk_items_per_day", int, "of the new items, ones with junk text"),
    ("edits_per_day", int, "catalogue item edits per day"),
    ("deletions_per_day", int, "catalogue item deletions per day"),
    ("bursts_per_day", int, "request bursts per day"),
    ("burst_requests", int, "requests in one burst"),
    ("burst_threads", int, "concurrent client threads of a burst"),
    ("probes_per_day", int, "rounds of unknown-id and invalid requests per day (4xx, never 5xx)"),
    ("workers", int, "service worker processes"),
    ("retrain_every", int, "days between retrains"),
    ("retrain_epochs", int, "epochs of a retrain"),
    ("redis_restart_day", int, "day Redis is restarted"),
    ("killed_refresh_day", int, "day a refresh job is killed mid-way"),
    ("service_restart_day", int, "day the service is restarted"),
    ("seed", int, "random seed of the traffic"),
    ("reload_interval_s", float, "the service's bundle reload interval (seconds)"),
    ("retrain_tolerance", float, "allowed drop of validation Recall@20 for a retrain to be promoted"),
    ("switch_timeout_s", float, "seconds every worker has to serve a new bundle"),
    ("rss_limit", float, "largest service memory allowed, as a multiple of day 1"),
)


def main(argv: list[str] | None = None) -> None:
    defaults = ReplayConfig()
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks day_in_the_life",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--from-dir", type=Path, default=REPO / "var", help="the work dir to copy (default var/)"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="default PROFILEREC_DATA_DIR or ../shared/data"
    )
    parser.add_argument(
        "--tmp-root", type=Path, default=None, help="where the private copy goes (default $TMPDIR)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the private copy (kept anyway on failure)")
    parser.add_argument("--no-record", action="store_true", help="do not append to benchmarks/results.jsonl")
    parser.add_argument(
        "--keep-going", action="store_true", help="do not stop at the first step with a violation"
    )
    parser.add_argument(
        "--refresh-strategy", default=defaults.refresh_strategy,
        help="extractive (fast), proex | reclm | duet, or `deployment` (the live bundle's profile strategy)",
    )  # fmt: skip
    for name, kind, what in REPLAY_OPTIONS:
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=kind,
            default=getattr(defaults, name),
            help=f"{what} (default: %(default)s)",
        )
    parser.add_argument("--kill-refresh-at", default=defaults.kill_refresh_at, help="generate | upsert")
    args = parser.parse_args(argv)
    config = ReplayConfig(
        **{k: getattr(args, k) for k in ReplayConfig.__dataclass_fields__ if hasattr(args, k)},
        fail_fast=not args.keep_going,
    )
    tmp = Path(tempfile.mkdtemp(prefix="day-in-the-life-", dir=args.tmp_root))
    print(f"private deployment copied from {args.from_dir} into {tmp}")
    deployment = Deployment.from_work_dir(args.from_dir, tmp, args.data_dir)
    replay = Replay(deployment, config)
    failed: Exception | None = None
    try:
        summary = replay.run()
    except ReplayFailedError as exc:
        failed = exc
        summary = replay.summary()
    print_summary(summary)
    params = {k: getattr(config, k) for k in ReplayConfig.__dataclass_fields__}
    params["from_dir"] = str(args.from_dir)
    params["bundle"] = replay.initial_version
    if not args.no_record and (failed is None or args.keep_going):
        record("day_in_the_life", summary, params)
    if failed is not None:
        print(
            f"\nFAILED: {failed}\n(the private deployment is kept in {tmp}: service.log, jobs/)",
            file=sys.stderr,
        )
        sys.exit(1)
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
