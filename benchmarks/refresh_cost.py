"""Cost of the daily refresh as a function of how many users changed.

On a private copy of the live deployment (bundle pointer, profile store, embedded Qdrant; no Redis),
appends positive feedback for N users (each liking two items they had not seen), runs one refresh, and
reports the wall time per phase. The profile generation and the writes grow with the number of changed
entities; reading the logs and rebuilding the live data is the small part that grows with the data.
A second run right after is timed too (it must be a no-op).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.results import print_table, record


def _copy_deployment(bundles_root: Path, qdrant_path: Path, tmp: Path) -> tuple[Path, Path, Path]:
    from rec_contract.bundle import promote, read_manifest, resolve_pointer

    live = resolve_pointer(bundles_root)
    manifest = read_manifest(live)
    root = tmp / "bundles"
    shutil.copytree(live, root / live.name)
    promote(root, live.name)
    store = tmp / "store"
    shutil.copytree(manifest.profiles.store_path, store)
    qdrant = tmp / "qdrant"
    shutil.copytree(qdrant_path, qdrant, ignore=shutil.ignore_patterns(".lock"))
    return root, store, qdrant


def main(argv: list[str] | None = None) -> None:
    from offline_jobs.refresh.job import run_refresh
    from offline_jobs.refresh.state import RefreshSettings
    from rec_contract.bundle import read_manifest, resolve_pointer
    from rec_contract.event_log import append_events
    from training.data import load_dataset

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--bundles-root",
        type=Path,
        default=Path("var/bundles"),
        help="bundle folder (read-only; `current` is used)",
    )
    parser.add_argument(
        "--qdrant-path",
        type=Path,
        default=Path("var/qdrant"),
        help="local Qdrant folder of the bundle's collections",
    )
    parser.add_argument(
        "--users", type=int, nargs="+", default=[1, 4, 16], help="numbers of users refreshed per measurement"
    )
    parser.add_argument(
        "--strategies", nargs="+", default=["extractive", "proex"], help="profile strategies to refresh with"
    )
    args = parser.parse_args(argv)
    manifest = read_manifest(resolve_pointer(args.bundles_root))
    dataset = load_dataset(manifest.dataset.source or manifest.dataset.name)
    popular = np.argsort(-np.bincount(dataset.item, minlength=dataset.n_items))
    rows: list[dict[str, Any]] = []
    for strategy in args.strategies:
        for n_users in args.users:
            with tempfile.TemporaryDirectory(prefix="refresh-bench-") as tmp_name:
                tmp = Path(tmp_name)
                bundles_root, store, qdrant = _copy_deployment(args.bundles_root, args.qdrant_path, tmp)
                feedback = tmp / "feedback.jsonl"
                events = []
                for user in range(n_users):
                    seen = set(dataset.item[dataset.user == user].tolist())
                    fresh = [int(i) for i in popular if int(i) not in seen][:2]
                    events += [
                        {
                            "user_id": str(dataset.user_ids[user]),
                            "item_id": str(dataset.item_ids[i]),
                            "type": "like",
                        }
                        for i in fresh
                    ]
                append_events(feedback, events)
                settings = RefreshSettings(
                    work_dir=tmp / "work",
                    bundles_root=bundles_root,
                    feedback_log=feedback,
                    catalog_log=tmp / "catalog.jsonl",
                    profile_store=store,
                    qdrant_path=qdrant,
                    redis_url=None,
                    refresh_strategy=strategy,
                )
                started = time.perf_counter()
                report = run_refresh(settings)
                seconds = time.perf_counter() - started
                noop_started = time.perf_counter()
                again = run_refresh(settings)
                noop_seconds = time.perf_counter() - noop_started
                entities = len(report.users) + len(report.items)
                rows.append(
                    {
                        "strategy": strategy,
                        "changed_users": len(report.users),
                        "changed_items": len(report.items),
                        "entities": entities,
                        "seconds": seconds,
                        "s_per_entity": seconds / max(entities, 1),
                        **{f"{k}_s": v for k, v in report.durations.items()},
                        "second_run": again.status,
                        "second_run_s": noop_seconds,
                    }
                )
                print(json.dumps(rows[-1]))
    print_table(
        rows, f"Refresh cost on {manifest.dataset.name} ({dataset.n_users} users, {dataset.n_items} items)"
    )
    record(
        "refresh_cost",
        {"table": rows},
        {
            "bundle": manifest.bundle_version,
            "dataset": manifest.dataset.name,
            "catalogue_items": dataset.n_items,
            "k": manifest.profiles.k,
            "qdrant": "embedded local mode",
        },
    )


if __name__ == "__main__":
    main()
