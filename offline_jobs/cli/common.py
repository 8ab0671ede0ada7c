"""What the command groups share: the work folder, the data/embedding/upload flags, reports."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from rec_contract.atomic import atomic_write_text


def work_dir() -> Path:
    return Path(os.environ.get("PROFILEREC_WORK_DIR", "var"))


def default_out(dataset: str, strategy: str) -> Path:
    name = Path(dataset).name if ("/" in dataset or os.sep in dataset) else dataset
    return work_dir() / "profiles" / f"{name}-{strategy}"


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="movielens-100k", help="dataset name or saved dataset folder")
    p.add_argument(
        "--data-dir", default=None, help="data root (default PROFILEREC_DATA_DIR or ../shared/data)"
    )
    p.add_argument(
        "--split-method",
        default=None,
        choices=["random", "temporal", "predefined"],
        help="split whose TRAINING part the profiles are built from (default: the dataset's)",
    )
    p.add_argument(
        "--split-seed",
        type=int,
        default=2024,
        help="seed of the random split (only training interactions feed the profiles)",
    )
    p.add_argument("--k", type=int, default=4, help="profiles per user and item")
    p.add_argument("--users", default=None, help="raw user ids: 'a,b,c', '@file', 'all' (default) or 'none'")
    p.add_argument("--items", default=None, help="raw item ids: 'a,b,c', '@file', 'all' (default) or 'none'")
    p.add_argument("--limit", type=int, default=None, help="only the first N selected users and N items")
    p.add_argument(
        "--out", default=None, help="profile store folder (default var/profiles/<dataset>-<strategy>)"
    )
    p.add_argument("--version", default=None, help="profile-set version (default <dataset>-<strategy>)")


def add_embed_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--embed-backend",
        default=None,
        help="minilm (default) | onnx (the exported encoder, faster) | openai",
    )
    p.add_argument("--embed-batch-size", type=int, default=64, help="texts per embedding batch")


def add_upload_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--qdrant-path", default=None, help="qdrant-client local mode folder (default var/qdrant)")
    p.add_argument("--qdrant-url", default=None, help="Qdrant server URL (instead of local mode)")
    p.add_argument("--qdrant-api-key", default=None, help="Qdrant API key (server mode)")
    p.add_argument("--no-alias", action="store_true", help="do not point the 'profiles' alias at it")


def store_version(args: argparse.Namespace, strategy: str) -> str:
    if args.version:
        return str(args.version)
    name = Path(args.dataset).name
    return f"{name}-{strategy}"


def write_report(out: Path, name: str, report: dict[str, Any]) -> None:
    atomic_write_text(out / name, json.dumps(report, indent=2, default=str))
