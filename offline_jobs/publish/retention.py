"""Bundle retention: remove the bundles nobody can serve or roll back to, and what was derived from them.

Every retrain exports a new bundle, and the service derives state from each bundle it opens: the API's
item writes applied to it (``<online_dir>/items-<version>.jsonl`` and ``items-<version>.content.jsonl``,
replayed from the catalogue log whenever a bundle is opened, so never the only copy), an in-process
HNSW shard of its catalogue (``edge-<version>``, ``edge-<version>.content``), the lock of its catalogue
replay (``reconcile-<version>.lock``) and, on a Qdrant server, its items collections. Nothing removed
them, so a daily retrain grew the disk without bound.

:func:`prune_bundles` keeps the bundles that ``current`` and ``previous`` point at (the live one and the
rollback target) and the ``keep`` most recently created, and removes every other bundle: its folder
first (renamed to a hidden ``.pruned-<version>`` and then deleted, so a half-done removal is never
mistaken for a bundle and is finished by the next run), then its derived files, then its Qdrant
collections unless a kept bundle or an alias still uses them (a profiles collection is shared by
every bundle of the same profile store version). ``dry_run`` reports without removing anything.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from rec_contract.bundle import (
    CURRENT_POINTER,
    PREVIOUS_POINTER,
    BundleError,
    BundleManifest,
    list_versions,
    read_manifest,
    resolve_pointer,
)
from rec_contract.paths import (
    CONTENT_INDEX_SUFFIX,
    default_paths,
    edge_shard_dir,
    overlay_file,
    reconcile_lock_file,
)

log = logging.getLogger(__name__)

PRUNED_PREFIX = ".pruned-"


def derived_paths(online_dir: Path, version: str) -> list[Path]:
    """What the service derived from bundle ``version`` under ``online_dir`` (present or not): the
    overlay and HNSW shard of its item index and of its content index, and its replay lock."""
    indexes = (version, f"{version}{CONTENT_INDEX_SUFFIX}")
    return [
        *(overlay_file(online_dir, v) for v in indexes),
        *(edge_shard_dir(online_dir, v) for v in indexes),
        reconcile_lock_file(online_dir, version),
    ]


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _pointed(root: Path) -> set[str]:
    """The versions ``current`` and ``previous`` resolve to (a missing or broken pointer: none)."""
    pointed = set()
    for pointer in (CURRENT_POINTER, PREVIOUS_POINTER):
        try:
            pointed.add(resolve_pointer(root, pointer).name)
        except BundleError:
            continue
    return pointed


def _collections(manifest: BundleManifest) -> set[str]:
    items = manifest.items_collection
    return {items, f"{items}_content", manifest.profiles_collection}


def _qdrant_in_use(client: Any) -> tuple[set[str], set[str]]:
    """The server's collections, and those an alias points at."""
    existing = {c.name for c in client.get_collections().collections}
    aliased = {a.collection_name for a in client.get_aliases().aliases}
    return existing, aliased


def plan(root: Path, keep: int) -> tuple[list[str], list[str], dict[str, BundleManifest]]:
    """(kept, pruned) versions and every bundle's manifest: kept = pointed at, or among the ``keep``
    newest by creation time."""
    if keep < 1:
        raise ValueError("keep must be >= 1 (the live bundle is always kept as well)")
    manifests = {v: read_manifest(root / v) for v in list_versions(root) if not v.startswith(PRUNED_PREFIX)}
    newest = sorted(manifests, key=lambda v: (manifests[v].created_at, v), reverse=True)[:keep]
    kept = sorted(set(newest) | (_pointed(root) & set(manifests)))
    return kept, sorted(set(manifests) - set(kept)), manifests


def prune_bundles(
    bundles_root: str | Path,
    keep: int,
    online_dir: str | Path | None = None,
    client: Any = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Remove the bundles :func:`plan` does not keep and what was derived from them (see the module)."""
    root, online = Path(bundles_root), Path(online_dir) if online_dir is not None else None
    kept, pruned, manifests = plan(root, keep)
    in_use: set[str] = set()
    for version in kept:
        in_use |= _collections(manifests[version])
    existing, aliased = _qdrant_in_use(client) if client is not None else (set(), set())
    report: dict[str, Any] = {"kept": kept, "pruned": [], "bytes_freed": 0, "dry_run": dry_run}
    report["qdrant"] = "checked" if client is not None else "not checked (no client: collections kept)"
    leftovers = [p for p in root.iterdir() if p.name.startswith(PRUNED_PREFIX)] if root.is_dir() else []
    for version in pruned:
        folder = root / version
        files = [folder] + [p for p in derived_paths(online, version) if p.exists()] if online else [folder]
        collections = sorted((_collections(manifests[version]) & existing) - in_use - aliased)
        freed = sum(_size(p) for p in files)
        report["pruned"].append(
            {"version": version, "paths": [str(p) for p in files], "collections": collections}
        )
        report["bytes_freed"] += freed
        if dry_run:
            continue
        hidden = root / f"{PRUNED_PREFIX}{version}"
        folder.rename(hidden)  # no longer a bundle for anyone who lists or points
        _remove(hidden)
        for path in files[1:]:
            _remove(path)
        for name in collections:
            client.delete_collection(name)
        log.info("bundle pruned", extra={"version": version, "bytes": freed, "collections": collections})
    report["leftovers"] = [p.name for p in leftovers]
    if not dry_run:
        for path in leftovers:  # a removal an earlier run did not finish: the folder, then its files
            version = path.name[len(PRUNED_PREFIX) :]
            _remove(path)
            for derived in derived_paths(online, version) if online else []:
                _remove(derived)
    return report


def add_prune_parser(sub: Any) -> None:
    """``profilerec-pipeline prune`` (its options)."""
    prune = sub.add_parser(
        "prune",
        help="remove old bundles (never the live one or the rollback target) and what the service "
        "derived from them (overlays, HNSW shards, unused Qdrant collections)",
    )
    prune.add_argument("--keep", type=int, default=3, help="newest bundles kept besides current/previous")
    prune.add_argument(
        "--online-dir",
        default=os.environ.get("PROFILEREC_ONLINE_DIR"),
        help="the service's online folder (default: $PROFILEREC_ONLINE_DIR or <work-dir>/online)",
    )
    prune.add_argument("--dry-run", action="store_true", help="report what would be removed, remove nothing")


def prune_command(args: argparse.Namespace, work: Path, client: Any) -> dict[str, Any]:
    online = Path(args.online_dir) if args.online_dir else default_paths(work)["online_dir"]
    return prune_bundles(args.bundles_root, args.keep, online, client, args.dry_run)
