"""The soak part of ``python -m benchmarks resilience``: the service (2 workers, a private Redis) under
80% of its measured maximum request rate for ``soak_s`` seconds, the mixed load of
:class:`benchmarks.fault_stack.Load` (known users, cold start, feedback, item upserts).

The maximum is measured first, closed-loop (each thread sends its next request when the previous one is
answered) for ``measure_s``; the client threads run on the same machine as the service, so it is the
maximum of this client and service together. Figures: the target and achieved rates, errors (non-2xx
or no answer), 5xx, p50/p99 per minute, the service's resident memory (the process tree) at the start
and end of the soak and at the end of each minute."""

from __future__ import annotations

import math
import time
from typing import Any

from benchmarks.day_in_the_life import Deployment, tree_rss_mb
from benchmarks.fault_stack import Catalogue, Load, percentiles, with_redis


def soak(
    deployment: Deployment,
    soak_s: float = 600.0,
    workers: int = 2,
    threads: int = 4,
    measure_s: float = 20.0,
    fraction: float = 0.8,
    seed: int = 0,
) -> dict[str, Any]:
    catalogue = Catalogue.of(deployment)
    with with_redis(deployment, workers) as (service, _):
        pid = service.process.pid
        assert pid is not None
        probe = Load(service.url, catalogue, threads=threads, seed=seed, upserts=True).start()
        time.sleep(measure_s)
        measured = probe.stop()
        ok = sum(1 for s in measured if 200 <= s.status < 300)
        max_rps = ok / measure_s
        target = fraction * max_rps
        rss_start = tree_rss_mb(pid)
        load = Load(
            service.url, catalogue, threads=threads, rate=target / threads, seed=seed + 1, upserts=True
        )
        started = time.monotonic()
        load.start()
        rss_minutes: list[float] = []  # at the end of each minute
        while (left := started + soak_s - time.monotonic()) > 0:
            time.sleep(min(60.0 - (time.monotonic() - started) % 60.0, left))
            rss_minutes.append(round(tree_rss_mb(pid), 1))
        samples = load.stop()
        rss_end = tree_rss_mb(pid)
    minutes = []
    for m in range(max(1, math.ceil(soak_s / 60))):
        part = [s for s in samples if started + 60 * m <= s.started < started + 60 * (m + 1)]
        minute = percentiles(part)
        minute["5xx"] = sum(1 for s in part if s.status >= 500)
        if m < len(rss_minutes):
            minute["rss_mb"] = rss_minutes[m]
        minutes.append({"minute": m + 1, **minute})
    return {
        "max_rps_measured": round(max_rps, 1),
        "target_rps": round(target, 1),
        "achieved_rps": round(len(samples) / soak_s, 1),
        "requests": len(samples),
        "errors": sum(1 for s in samples if not 200 <= s.status < 300),
        "5xx": sum(1 for s in samples if s.status >= 500),
        "no_answer": sum(1 for s in samples if s.status < 0),
        **{f"all_{k}": v for k, v in percentiles(samples).items() if k.endswith("_ms")},
        "per_minute": minutes,
        "rss_start_mb": round(rss_start, 1),
        "rss_end_mb": round(rss_end, 1),
        "rss_growth_pct": round(100 * (rss_end - rss_start) / rss_start, 1),
    }
