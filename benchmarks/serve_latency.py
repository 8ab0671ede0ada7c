"""Latency and throughput of the running service over HTTP on loopback, beside the HTTP floor.

Starts, on a published bundle, a private redis-server, the service (uvicorn, uvloop + httptools, the
default in-process retrieval store) and a minimal FastAPI app with the same server stack (the floor:
what the server does with no work per request), each with 1 and then 2 worker processes. Every
scenario is driven by ``wrk`` at 1 and 16 connections, ``--repeats`` times (medians reported), with a
Lua script that varies the request:

* ``floor``: GET /ping of the minimal app;
* ``known_warm``: random known users, the user-vector cache warmed for all of them first;
* ``known_no_cache``: random known users with no Redis and no in-worker cache
  (``PROFILEREC_LOCAL_CACHE_ENTRIES=0``): every request reads the user's profiles, runs the user tower
  and searches the whole catalogue (the cold-cache path);
* ``cold_liked``: POST /v1/recommendations with three random liked items;
* ``cold_text``: the same with a sentence of text only (the text encoder runs on every request);
* ``cold_liked_text``: three liked items and a sentence.

Figures: requests/s, p50/p99 latency (ms), non-2xx and socket errors, req/s as a fraction of the
floor's at the same workers and connections, and the mean time per request stage read from the
service's ``/metrics`` (all workers aggregated).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.results import print_table, record

FLOOR_APP = """
from fastapi import FastAPI

app = FastAPI()


@app.get("/ping")
async def ping() -> dict[str, bool]:
    return {"ok": True}
"""
LUA_DONE = """
done = function(summary, latency, requests)
  local out = string.format('{"requests": %d, "duration_us": %d, "non2xx": %d, "errors": %d, ',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout)
  out = out .. string.format('"p50_us": %d, "p90_us": %d, "p99_us": %d, "mean_us": %f}',
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean)
  io.write("WRK_JSON " .. out .. "\\n")
end
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(url: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s")


@contextlib.contextmanager
def _process(
    cmd: list[str], env: dict[str, str] | None = None, log: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    out = log.open("wb") if log else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        if log:
            out.close()  # type: ignore[union-attr]


def _lua_users(users: list[str], path_template: str) -> str:
    table = ",".join(json.dumps(u) for u in users)
    return (
        f"local users = {{{table}}}\nmath.randomseed(42)\n"
        "request = function()\n"
        "  local u = users[math.random(#users)]\n"
        f'  return wrk.format("GET", string.format("{path_template}", u))\n'
        "end\n" + LUA_DONE
    )


def _lua_cold_start(items: list[str], texts: list[str], liked: int, text: bool) -> str:
    item_table = ",".join(json.dumps(i) for i in items)
    text_table = ",".join(json.dumps(t) for t in texts)
    fields = []
    if liked:
        picks = ", ".join('"%s"' for _ in range(liked))
        fields.append(f'"liked_items": [{picks}]')
    if text:
        fields.append('"text": "%s %s"')
    args = ", ".join(
        ["items[math.random(#items)]"] * liked + ["texts[math.random(#texts)]"] * (2 if text else 0)
    )
    template = "{" + ", ".join([*fields, '"n": 20']) + "}"
    return (
        f"local items = {{{item_table}}}\nlocal texts = {{{text_table}}}\nmath.randomseed(7)\n"
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        "request = function()\n"
        f"  local body = string.format('{template}', {args})\n"
        '  return wrk.format("POST", "/v1/recommendations", nil, body)\n'
        "end\n" + LUA_DONE
    )


def run_wrk(url: str, script: str, duration: int, connections: int, threads: int) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(script)
        path = fh.name
    try:
        out = subprocess.run(
            ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "-s", path, url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        Path(path).unlink(missing_ok=True)
    line = next(row for row in out.splitlines() if row.startswith("WRK_JSON "))
    raw = json.loads(line.removeprefix("WRK_JSON "))
    seconds = raw["duration_us"] / 1e6
    return {
        "req_per_s": raw["requests"] / seconds,
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "non_2xx": raw["non2xx"],
        "socket_errors": raw["errors"],
        "requests": raw["requests"],
    }


STAGE_PREFIX = "profilerec_stage_duration_seconds_"
TASTES = [
    "I love space adventures", "romantic comedies from the nineties", "dark crime thrillers",
    "animated family films", "war dramas based on true stories", "slow European art films",
    "slasher horror with a twist", "westerns with gunfights", "musicals and dance films",
    "documentaries about nature", "film noir detectives", "epic fantasy quests",
]  # fmt: skip
STYLES = [
    "and anything with a great soundtrack", "but nothing too long", "especially classics",
    "with strong female leads", "that make me think", "to watch with friends", "on a rainy evening",
    "with clever dialogue",
]  # fmt: skip


def _stage_totals(url: str) -> dict[str, tuple[float, float]]:
    """Per stage: (seconds, count) so far, summed over every worker."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith(STAGE_PREFIX) or "{" not in line:
            continue
        name, rest = line[len(STAGE_PREFIX) :].split("{", 1)
        if name not in ("sum", "count"):
            continue
        label = rest.split('stage="', 1)[1].split('"', 1)[0]
        (sums if name == "sum" else counts)[label] = float(line.rsplit(" ", 1)[1])
    return {k: (sums.get(k, 0.0), counts.get(k, 0.0)) for k in sums}


def _stage_breakdown(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]], requests: int
) -> str:
    """Mean milliseconds per request spent in each stage (stages that ran)."""
    parts = []
    for name, (total, count) in sorted(after.items()):
        spent = total - before.get(name, (0.0, 0.0))[0]
        runs = count - before.get(name, (0.0, 0.0))[1]
        if runs > 0 and requests:
            parts.append(f"{name} {1000 * spent / requests:.3f}")
    return ", ".join(parts)


@contextlib.contextmanager
def _redis() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is missing (apt-get install -y redis-server)")
    port = _free_port()
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
           "--maxmemory", "256mb", "--maxmemory-policy", "allkeys-lru"]  # fmt: skip
    with _process(cmd):
        time.sleep(0.3)
        yield f"redis://127.0.0.1:{port}/0"


@contextlib.contextmanager
def _service(
    bundles_root: Path, redis_url: str, work: Path, workers: int, local_cache_entries: int = 10_000
) -> Iterator[str]:
    port = _free_port()
    run = work / f"service-{port}"
    run.mkdir()
    env = {
        "PROFILEREC_WORK_DIR": str(run),
        "PROFILEREC_BUNDLES_ROOT": str(bundles_root.resolve()),
        "PROFILEREC_REDIS_URL": redis_url,
        "PROFILEREC_RELOAD_INTERVAL_S": "0",
        "PROFILEREC_LOG_LEVEL": "WARNING",
        "PROMETHEUS_MULTIPROC_DIR": "",
        "PROFILEREC_LOCAL_CACHE_ENTRIES": str(local_cache_entries),
    }
    cmd = [
        sys.executable,
        "-m",
        "service",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    with _process(cmd, env, run / "service.log"):
        url = f"http://127.0.0.1:{port}"
        _wait_http(f"{url}/readyz")
        from benchmarks.fault_stack import wait_workers

        wait_workers(url, workers, 90.0)  # every worker serves, not only the first to answer
        yield url


@contextlib.contextmanager
def _floor(work: Path, workers: int) -> Iterator[str]:
    (work / "floor_app.py").write_text(FLOOR_APP)
    port = _free_port()
    cmd = [
        sys.executable, "-m", "uvicorn", "floor_app:app", "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(workers), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
        "--log-level", "warning",
    ]  # fmt: skip
    with _process(cmd, {"PYTHONPATH": str(work)}):
        url = f"http://127.0.0.1:{port}"
        _wait_http(f"{url}/ping")
        if workers > 1:
            time.sleep(2.0)
        yield url


def _measure(
    url: str, script: str, args: argparse.Namespace, connections: int, stages: bool
) -> dict[str, Any]:
    runs = []
    before = _stage_totals(url) if stages else {}
    for _ in range(args.repeats):
        runs.append(run_wrk(url, script, args.duration, connections, 1))
    requests = sum(r["requests"] for r in runs)
    row: dict[str, Any] = {
        "req_per_s": statistics.median(r["req_per_s"] for r in runs),
        "p50_ms": statistics.median(r["p50_ms"] for r in runs),
        "p99_ms": statistics.median(r["p99_ms"] for r in runs),
        "non_2xx": sum(r["non_2xx"] for r in runs),
        "socket_errors": sum(r["socket_errors"] for r in runs),
        "requests": requests,
        "repeats": args.repeats,
    }
    if stages:
        row["stages_ms"] = _stage_breakdown(before, _stage_totals(url), requests)
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--bundles-root",
        type=Path,
        default=Path("var/bundles"),
        help="bundle folder (read-only; `current` is served)",
    )
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--repeats", type=int, default=3, help="wrk runs per cell (medians reported)")
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1, 2], help="service worker counts to measure"
    )
    parser.add_argument(
        "--connections", type=int, nargs="+", default=[1, 16], help="concurrent wrk connections to measure"
    )
    parser.add_argument(
        "--scenarios",
        nargs="+",
        default=["known_warm", "known_no_cache", "cold_liked", "cold_text", "cold_liked_text"],
        help="request kinds to measure",
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing (apt-get install -y wrk)")
    current = (args.bundles_root / "current").resolve()
    users = json.loads((current / "users.json").read_text())
    items = json.loads((current / "items.json").read_text())
    manifest = json.loads((current / "manifest.json").read_text())
    rng = random.Random(0)
    texts = [f"{t} {s}" for t in TASTES for s in STYLES]
    liked_pool = rng.sample(items, min(300, len(items)))
    scripts = {
        "known_warm": _lua_users(users, "/v1/users/%s/recommendations?n=20"),
        "known_no_cache": _lua_users(users, "/v1/users/%s/recommendations?n=20"),
        "cold_liked": _lua_cold_start(liked_pool, texts, 3, False),
        "cold_text": _lua_cold_start(liked_pool, TASTES, 0, True),
        "cold_liked_text": _lua_cold_start(liked_pool, TASTES, 3, True),
    }
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        work = Path(tmp)
        for workers in args.workers:
            floor: dict[int, float] = {}
            with _floor(work, workers) as floor_url:
                script = 'wrk.path = "/ping"\n' + LUA_DONE
                for connections in args.connections:
                    row = _measure(floor_url, script, args, connections, stages=False)
                    floor[connections] = row["req_per_s"]
                    rows.append({"scenario": "floor", "workers": workers, "connections": connections, **row})
            cached = [s for s in args.scenarios if s != "known_no_cache"]
            with _redis() as redis_url, _service(args.bundles_root, redis_url, work, workers) as url:
                for user in users:  # warm the user-vector cache for every known user
                    urllib.request.urlopen(f"{url}/v1/users/{user}/recommendations?n=20", timeout=10).read()
                for scenario in cached:
                    for connections in args.connections:
                        row = _measure(url, scripts[scenario], args, connections, stages=True)
                        row["x_floor_rps"] = row["req_per_s"] / floor[connections]
                        rows.append(
                            {"scenario": scenario, "workers": workers, "connections": connections, **row}
                        )
            if "known_no_cache" in args.scenarios:
                with _service(args.bundles_root, "", work, workers, local_cache_entries=0) as url:
                    for connections in args.connections:
                        row = _measure(url, scripts["known_no_cache"], args, connections, stages=True)
                        row["x_floor_rps"] = row["req_per_s"] / floor[connections]
                        rows.append(
                            {
                                "scenario": "known_no_cache",
                                "workers": workers,
                                "connections": connections,
                                **row,
                            }
                        )
    print_table(
        [{k: v for k, v in r.items() if k != "stages_ms"} for r in rows],
        f"HTTP on loopback, wrk -t1, {args.repeats} x {args.duration}s per cell (medians)",
    )
    for r in rows:
        if r.get("stages_ms"):
            cell = f"{r['scenario']:<16} w={r['workers']} c={r['connections']:<3}"
            print(f"  {cell} stages (ms/request): {r['stages_ms']}")
    record(
        "serve_latency",
        {"table": rows},
        {
            "bundle": manifest["bundle_version"],
            "model_kind": manifest["model_kind"],
            "items": len(items),
            "users": len(users),
            "store": "in-process (engine auto)",
            "duration_s": args.duration,
            "repeats": args.repeats,
            "workers": args.workers,
            "connections": args.connections,
        },
    )


if __name__ == "__main__":
    main()
