"""``profilerec-jobs refresh``: the daily refresh (:mod:`offline_jobs.refresh.job`)."""

from __future__ import annotations

import json
import sys
from typing import Any

from offline_jobs.refresh.job import run_refresh
from offline_jobs.refresh.state import (
    DEAD_LETTER_FILE,
    EXIT_LOCKED,
    RefreshFailedError,
    RefreshLockedError,
    RefreshSettings,
)


def cmd_refresh(args: Any) -> int:
    """``profilerec-jobs refresh``: one run with the settings from the environment (and flags)."""
    overrides = {
        k: v for k, v in {"refresh_strategy": args.strategy, "profile_store": args.profile_store}.items() if v
    }
    settings = RefreshSettings(**overrides)
    try:
        report = run_refresh(settings)
    except RefreshLockedError as exc:
        print(f"refresh skipped: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    except RefreshFailedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary: dict[str, Any] = {
        "status": report.status,
        "users": len(report.users),
        "items": len(report.items),
        "quarantined": len(report.quarantined),
        "seconds": report.seconds,
    }
    if report.quarantined:
        summary["dead_letter"] = str(settings.state_dir / DEAD_LETTER_FILE)
    print(json.dumps(summary))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("refresh", help="daily refresh: regenerate the profiles of whoever changed")
    p.add_argument(
        "--strategy", help="proex | reclm | duet | extractive (default PROFILEREC_REFRESH_STRATEGY or proex)"
    )
    p.add_argument("--profile-store", help="default: the live bundle's profile store")
    p.set_defaults(func=cmd_refresh)
