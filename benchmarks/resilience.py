"""``python -m benchmarks resilience``: how the live service takes bad input and faults (issue 17,
item 6).

Each part runs ``python -m service`` (uvicorn, its workers, keys required) on its own private copy of a
deployment (``--from-dir``, default ``var/`` from ``make demo``: the live bundle, its profile store and
text encoder; empty logs) over loopback HTTP, and is recorded separately (``params.part``) with the
machine load:

- ``bad_input``: the corpus of :mod:`benchmarks.bad_input`: cases, 2xx, 4xx, 5xx, JSON errors of the
  documented schema, statuses other than the expected ones (no Redis);
- ``redis_kill``, ``qdrant_down``, ``qdrant_hang``, ``corrupt_bundle``, ``feedback_kills``: see
  :mod:`benchmarks.fault_parts`;
- ``refresh_kills``: the refresh job SIGKILLed at ``--kills`` seeded random moments, each rerun
  compared with an uninterrupted run: see :mod:`benchmarks.refresh_kills`;
- ``soak``: 80% of the measured maximum rate for ``--soak-s``: see :mod:`benchmarks.resilience_soak`.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import fault_parts
from benchmarks.bad_input import corpus, run_corpus, summarise
from benchmarks.day_in_the_life import ADMIN_KEY, API_KEY, Deployment
from benchmarks.fault_stack import Service
from benchmarks.refresh_kills import refresh_kills
from benchmarks.resilience_soak import soak
from benchmarks.results import print_table, record
from rec_contract.bundle import resolve_pointer


def _catalogue_sample(bundle: Path) -> tuple[str, str, tuple[str, str]]:
    """A known user, the most popular item and the two most common categories of the bundle."""
    users = json.loads((bundle / "users.json").read_text())
    items = json.loads((bundle / "items.json").read_text())
    meta = json.loads((bundle / "items_meta.json").read_text())
    best = max(range(len(items)), key=lambda i: int(meta[i].get("popularity", 0)))
    common = Counter(c for m in meta for c in m.get("categories") or ())
    (c1, _), (c2, _) = common.most_common(2)
    return str(users[0]), str(items[best]), (c1, c2)


PARTS = (
    "bad_input",
    "redis_kill",
    "qdrant_down",
    "qdrant_hang",
    "corrupt_bundle",
    "feedback_kills",
    "refresh_kills",
    "soak",
)


def run_part(part: str, deployment: Deployment, args: argparse.Namespace) -> dict[str, Any]:
    w = args.workers
    parts: dict[str, Callable[[], dict[str, Any]]] = {
        "bad_input": lambda: bad_input(deployment, w),
        "redis_kill": lambda: fault_parts.redis_kill(deployment, w, phase_s=args.phase_s),
        "qdrant_down": lambda: fault_parts.qdrant_unavailable(deployment, "down", args.qdrant_timeout_s, w),
        "qdrant_hang": lambda: fault_parts.qdrant_unavailable(deployment, "hang", args.qdrant_timeout_s, w),
        "corrupt_bundle": lambda: fault_parts.corrupt_bundle(deployment, w, phase_s=args.phase_s),
        "feedback_kills": lambda: fault_parts.feedback_kills(deployment, args.kills, w),
        "refresh_kills": lambda: refresh_kills(deployment, args.kills, strategy=args.refresh_strategy),
        "soak": lambda: soak(deployment, args.soak_s, w),
    }
    if part not in parts:
        raise ValueError(f"unknown part {part!r} (one of {', '.join(PARTS)})")
    return parts[part]()


def bad_input(deployment: Deployment, workers: int) -> dict[str, Any]:
    # no cache: the corpus is about input handling
    with Service(deployment, workers, "", reload_interval_s="0").running() as service:
        user, item, categories = _catalogue_sample(resolve_pointer(deployment.bundles_root))
        cases = corpus(user, item, categories=categories)
        started = time.perf_counter()
        outcomes = run_corpus(service.url, {"X-API-Key": API_KEY, "X-Admin-Key": ADMIN_KEY}, cases)
        seconds = time.perf_counter() - started
    summary = summarise(outcomes)
    unexpected = [f"{o.case.name}: {o.status}" for o in outcomes if not o.expected or not o.json_error]
    return {**summary, "seconds": round(seconds, 2), "unexpected": unexpected[:20]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--from-dir", type=Path, default=Path("var"), help="the work dir to copy (default var/)"
    )
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="which parts to run")
    parser.add_argument("--workers", type=int, default=2, help="service worker processes")
    parser.add_argument("--phase-s", type=float, default=15.0, help="redis_kill / corrupt_bundle phases")
    parser.add_argument(
        "--kills", type=int, default=20, help="feedback_kills, refresh_kills: how many SIGKILLs"
    )
    parser.add_argument(
        "--refresh-strategy",
        default="extractive",
        help="refresh_kills: the refresh's profile strategy (extractive: no LLM; proex: the embedded LLM)",
    )
    parser.add_argument(
        "--qdrant-timeout-s", type=float, default=2.0, help="qdrant_down / qdrant_hang: the service's timeout"
    )
    parser.add_argument("--soak-s", type=float, default=600.0, help="soak: how long (s)")
    parser.add_argument(
        "--tmp-root",
        type=Path,
        default=None,
        help="where the private copy of the work dir goes (default: the system temp dir)",
    )
    parser.add_argument("--no-record", action="store_true", help="print only")
    args = parser.parse_args(argv)
    for part in args.parts:
        with tempfile.TemporaryDirectory(dir=args.tmp_root, prefix=f"resilience-{part}-") as tmp:
            deployment = Deployment.from_work_dir(args.from_dir, Path(tmp))
            load_before = os.getloadavg()
            figures = run_part(part, deployment, args)
            load_after = os.getloadavg()
        figures.update(
            {
                "loadavg_1m_before": round(load_before[0], 2),
                "loadavg_1m_after": round(load_after[0], 2),
                "cpus": os.cpu_count(),
                "note": "loopback, python -m service; other jobs shared the machine (see loadavg)",
            }
        )
        print_table(
            [{k: v for k, v in figures.items() if not isinstance(v, dict | list)}],
            title=f"resilience: {part}",
        )
        for key, value in figures.items():
            if isinstance(value, dict | list):
                print(f"  {key}: {json.dumps(value)}")
        if not args.no_record:
            params = {"part": part, "workers": args.workers, "from_dir": str(args.from_dir)}
            if part in ("redis_kill", "corrupt_bundle"):
                params["phase_s"] = args.phase_s
            if part in ("feedback_kills", "refresh_kills"):
                params["kills"] = args.kills
            if part == "refresh_kills":
                params["refresh_strategy"] = args.refresh_strategy
            if part.startswith("qdrant_"):
                params["qdrant_timeout_s"] = args.qdrant_timeout_s
                params["when"] = (
                    "while serving, then back (FakeQdrant: Qdrant's REST API over the deployment's embedded "
                    "storage); down: also at startup"
                )
            if part == "soak":
                params["soak_s"] = args.soak_s
            record("resilience", figures, params)
