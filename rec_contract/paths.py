"""Where things live under the work directory (``PROFILEREC_WORK_DIR``, default ``var``).

Every component's settings default their paths to these, so one variable moves a whole deployment;
each path can still be set on its own (``PROFILEREC_BUNDLES_ROOT``, ``PROFILEREC_QDRANT_PATH`` ...).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

DEFAULT_WORK_DIR = Path("var")


def default_paths(work_dir: Path) -> dict[str, Path]:
    return {
        "bundles_root": work_dir / "bundles",
        "qdrant_path": work_dir / "qdrant",
        "online_dir": work_dir / "online",
        "feedback_log": work_dir / "feedback" / "feedback.jsonl",
        "catalog_log": work_dir / "feedback" / "catalog.jsonl",
        "text_encoder_dir": work_dir / "text_encoder",
    }


def fill_default_paths(data: Any, fields: Iterable[str]) -> Any:
    """For a settings model's raw input (a ``mode="before"`` validator): every path field among
    ``fields`` that is missing or empty gets its default under ``work_dir``."""
    if not isinstance(data, dict):
        return data
    work_dir = Path(data.get("work_dir") or DEFAULT_WORK_DIR)
    for name, path in default_paths(work_dir).items():
        if name in fields and data.get(name) in (None, ""):
            data[name] = path
    return data


# What the service derives from one bundle under its online folder (``online_dir``), named here so that
# whoever removes a bundle (``offline_jobs.publish.retention``) finds exactly what the service wrote.
CONTENT_INDEX_SUFFIX = ".content"  # the content index of bundle V is opened as version "V.content"


def overlay_file(online_dir: Path, index_version: str) -> Path:
    """The API's item writes applied to an item index (replayed from the catalogue log on open)."""
    return online_dir / f"items-{index_version}.jsonl"


def edge_shard_dir(online_dir: Path, index_version: str) -> Path:
    """An item index's in-process HNSW shard (qdrant-edge)."""
    return online_dir / f"edge-{index_version}"


def reconcile_lock_file(online_dir: Path, bundle_version: str) -> Path:
    """The lock of a bundle's catalogue replay (one worker replays, the others wait)."""
    return online_dir / f"reconcile-{bundle_version}.lock"
