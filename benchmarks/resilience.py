"""``python -m benchmarks resilience``: how the live service takes bad input (issue 17, item 6).

Runs ``python -m service`` (uvicorn, its workers, keys required) on a private copy of a deployment
(``--from-dir``, default ``var/`` from ``make demo``: the live bundle, its profile store and text
encoder; empty logs; no Redis), sends the bad-input corpus of :mod:`benchmarks.bad_input` over
loopback HTTP and records the counts: cases, 2xx, 4xx, 5xx, JSON errors of the documented schema,
statuses other than the expected ones. The machine load is recorded with the figures.

Only the bad-input part is implemented; the soak, Redis-kill, Qdrant-hang, corrupt-bundle and
kill-during-write scenarios of the issue are not (yet).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from benchmarks.bad_input import corpus, run_corpus, summarise
from benchmarks.day_in_the_life import ADMIN_KEY, API_KEY, Deployment, ServiceProcess, free_port
from benchmarks.results import print_table, record
from rec_contract.bundle import resolve_pointer


def _wait_ready(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the service at {url} did not become ready in {timeout:.0f} s")


def _catalogue_sample(bundle: Path) -> tuple[str, str, tuple[str, str]]:
    """A known user, the most popular item and the two most common categories of the bundle."""
    users = json.loads((bundle / "users.json").read_text())
    items = json.loads((bundle / "items.json").read_text())
    meta = json.loads((bundle / "items_meta.json").read_text())
    best = max(range(len(items)), key=lambda i: int(meta[i].get("popularity", 0)))
    common = Counter(c for m in meta for c in m.get("categories") or ())
    (c1, _), (c2, _) = common.most_common(2)
    return str(users[0]), str(items[best]), (c1, c2)


def run(from_dir: Path, workers: int, tmp_root: Path | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(dir=tmp_root, prefix="resilience-") as tmp:
        deployment = Deployment.from_work_dir(from_dir, Path(tmp))
        port = free_port()
        env = {
            **deployment.env("", f"http://127.0.0.1:{port}"),
            "PROFILEREC_REDIS_URL": "",  # no cache: the corpus is about input handling
            "PROFILEREC_RELOAD_INTERVAL_S": "0",
            "PROFILEREC_LOG_FORMAT": "json",
        }
        service = ServiceProcess(deployment, env, workers, deployment.root / "service.log", port)
        service.start()
        try:
            _wait_ready(service.url, 180)
            user, item, categories = _catalogue_sample(resolve_pointer(deployment.bundles_root))
            cases = corpus(user, item, categories=categories)
            load_before = os.getloadavg()
            started = time.perf_counter()
            outcomes = run_corpus(service.url, {"X-API-Key": API_KEY, "X-Admin-Key": ADMIN_KEY}, cases)
            seconds = time.perf_counter() - started
            load_after = os.getloadavg()
        finally:
            service.stop()
    summary = summarise(outcomes)
    unexpected = [f"{o.case.name}: {o.status}" for o in outcomes if not o.expected or not o.json_error]
    return {
        **summary,
        "seconds": round(seconds, 2),
        "unexpected": unexpected[:20],
        "loadavg_1m_before": round(load_before[0], 2),
        "loadavg_1m_after": round(load_after[0], 2),
        "cpus": os.cpu_count(),
        "note": "loopback, python -m service; other jobs shared the machine (see loadavg)",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--from-dir", type=Path, default=Path("var"), help="the work dir to copy (default var/)"
    )
    parser.add_argument("--workers", type=int, default=2, help="service worker processes")
    parser.add_argument(
        "--tmp-root",
        type=Path,
        default=None,
        help="where the private copy of the work dir goes (default: the system temp dir)",
    )
    parser.add_argument("--no-record", action="store_true", help="print only")
    args = parser.parse_args(argv)
    figures = run(args.from_dir, args.workers, args.tmp_root)
    print_table(
        [{k: v for k, v in figures.items() if k != "unexpected"}], title="resilience: bad-input corpus"
    )
    for line in figures["unexpected"]:
        print(f"  unexpected: {line}")
    if not args.no_record:
        record(
            "resilience",
            figures,
            {"part": "bad_input", "workers": args.workers, "from_dir": str(args.from_dir)},
        )
