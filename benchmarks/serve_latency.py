"""Latency and throughput of the running service over HTTP on loopback, beside the HTTP floor.

Starts (unless ``--url`` is given) the service with uvicorn (uvloop + httptools, one worker) on a
published bundle, a private redis-server, and a minimal FastAPI app with the same server stack (the
floor: what one worker can do with no work per request). Each scenario is driven by ``wrk`` with a Lua
script that varies the request and prints the latency distribution:

* ``known_user_cache_hit``: random known users, the profile cache warmed for all of them first;
* ``known_user_cache_miss``: random known users against a Redis too small to hold their profiles
  (``maxmemory`` 64 KiB, LRU), so nearly every request reads Qdrant; the measured hit ratio is reported;
* ``cold_start``: POST /v1/recommendations with three random liked items and a short text (the text
  encoder runs on every request);
* ``floor``: GET /ping of the minimal app.

Figures: requests/s, p50/p90/p99 latency (ms), non-2xx count, and the ratio to the floor.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import socket
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


def _lua_cold_start(items: list[str], texts: list[str]) -> str:
    item_table = ",".join(json.dumps(i) for i in items)
    text_table = ",".join(json.dumps(t) for t in texts)
    return (
        f"local items = {{{item_table}}}\nlocal texts = {{{text_table}}}\nmath.randomseed(7)\n"
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        "request = function()\n"
        "  local a = items[math.random(#items)]\n"
        "  local b = items[math.random(#items)]\n"
        "  local c = items[math.random(#items)]\n"
        "  local t = texts[math.random(#texts)]\n"
        '  local body = string.format(\'{"liked_items": ["%s", "%s", "%s"], "text": "%s", '
        '"n": 20}\', a, b, c, t)\n'
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


def _cache_counts(url: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("profilerec_profile_cache_requests_total{"):
            label = line.split('result="', 1)[1].split('"', 1)[0]
            counts[label] = float(line.rsplit(" ", 1)[1])
    return counts


def _hit_ratio(before: dict[str, float], after: dict[str, float]) -> float:
    hits = after.get("hit", 0) - before.get("hit", 0)
    total = sum(after.values()) - sum(before.values())
    return hits / total if total else float("nan")


@contextlib.contextmanager
def _redis(maxmemory: str | None) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is missing (apt-get install -y redis-server)")
    port = _free_port()
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    if maxmemory:
        cmd += ["--maxmemory", maxmemory, "--maxmemory-policy", "allkeys-lru"]
    with _process(cmd):
        time.sleep(0.3)
        yield f"redis://127.0.0.1:{port}/0"


@contextlib.contextmanager
def _service(bundles_root: Path, qdrant_path: Path, redis_url: str, workdir: Path) -> Iterator[str]:
    port = _free_port()
    env = {
        "PROFILEREC_BUNDLES_ROOT": str(bundles_root),
        "PROFILEREC_QDRANT_PATH": str(qdrant_path),
        "PROFILEREC_REDIS_URL": redis_url,
        "PROFILEREC_FEEDBACK_LOG": str(workdir / "feedback.jsonl"),
        "PROFILEREC_RELOAD_INTERVAL_S": "0",
        "PROFILEREC_LOG_LEVEL": "WARNING",
    }
    cmd = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with _process(cmd, env, workdir / f"service-{port}.log"):
        url = f"http://127.0.0.1:{port}"
        _wait_http(f"{url}/readyz")
        yield url


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundles-root", type=Path, default=Path("var/bundles"))
    parser.add_argument(
        "--qdrant-path", type=Path, default=Path("var/qdrant"), help="a copy is used (the lock)"
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per scenario")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing (apt-get install -y wrk)")
    current = (args.bundles_root / "current").resolve()
    users = json.loads((current / "users.json").read_text())
    items = json.loads((current / "items.json").read_text())
    manifest = json.loads((current / "manifest.json").read_text())
    texts = [
        "I love space adventures",
        "romantic comedies from the nineties",
        "dark crime thrillers",
        "animated family films",
    ]
    rows: list[dict[str, Any]] = []

    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        work = Path(tmp)
        qdrant_copy = work / "qdrant"
        shutil.copytree(args.qdrant_path, qdrant_copy, ignore=shutil.ignore_patterns(".lock"))

        floor_file = work / "floor_app.py"
        floor_file.write_text(FLOOR_APP)
        floor_port = _free_port()
        floor_cmd = [
            sys.executable, "-m", "uvicorn", "floor_app:app",
            "--host", "127.0.0.1", "--port", str(floor_port),
            "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
        with _process(floor_cmd, {"PYTHONPATH": str(work)}):
            floor_url = f"http://127.0.0.1:{floor_port}"
            _wait_http(f"{floor_url}/ping")
            script = 'wrk.path = "/ping"\n' + LUA_DONE
            rows.append(
                {
                    "scenario": "floor",
                    **run_wrk(floor_url, script, args.duration, args.connections, args.threads),
                }
            )

        with _redis(None) as redis_url, _service(args.bundles_root, qdrant_copy, redis_url, work) as url:
            for user in users:  # warm the profile cache for every known user
                urllib.request.urlopen(f"{url}/v1/users/{user}/recommendations?n=20", timeout=10).read()
            before = _cache_counts(url)
            result = run_wrk(
                url,
                _lua_users(users, "/v1/users/%s/recommendations?n=20"),
                args.duration,
                args.connections,
                args.threads,
            )
            rows.append(
                {
                    "scenario": "known_user_cache_hit",
                    **result,
                    "cache_hit_ratio": _hit_ratio(before, _cache_counts(url)),
                }
            )
            before = _cache_counts(url)
            result = run_wrk(
                url,
                _lua_cold_start(random.Random(0).sample(items, min(300, len(items))), texts),
                args.duration,
                args.connections,
                args.threads,
            )
            rows.append({"scenario": "cold_start_items_and_text", **result})

        with _redis("64kb") as redis_url, _service(args.bundles_root, qdrant_copy, redis_url, work) as url:
            before = _cache_counts(url)
            result = run_wrk(
                url,
                _lua_users(users, "/v1/users/%s/recommendations?n=20"),
                args.duration,
                args.connections,
                args.threads,
            )
            rows.append(
                {
                    "scenario": "known_user_cache_miss",
                    **result,
                    "cache_hit_ratio": _hit_ratio(before, _cache_counts(url)),
                }
            )

    floor = rows[0]
    for row in rows:
        row["x_floor_p50"] = row["p50_ms"] / floor["p50_ms"]
        row["floor_rps_ratio"] = floor["req_per_s"] / row["req_per_s"]
    print_table(
        rows,
        f"HTTP on loopback, 1 uvicorn worker, wrk -t{args.threads} -c{args.connections} -d{args.duration}s",
    )
    record(
        "serve_latency",
        {"table": rows},
        {
            "bundle": manifest["bundle_version"],
            "model_kind": manifest["model_kind"],
            "items": len(items),
            "users": len(users),
            "qdrant": "embedded local mode",
            "duration_s": args.duration,
            "connections": args.connections,
            "wrk_threads": args.threads,
        },
    )


if __name__ == "__main__":
    main()
