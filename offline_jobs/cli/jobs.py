"""``profilerec-jobs``: the offline profile jobs.

extractive           deterministic extractive profiles (K facets) + their vectors -> a profile store
generate             LLM profiles (proex | reclm | duet) with validation, fallback and a resumable cache
embed                profiles.parquet -> profile_vectors.parquet
upload               profile vectors -> Qdrant collection ``profiles_<version>`` + alias ``profiles``
pipeline             generate + embed + upload in one command (the full MovieLens-100k run)
export-text-encoder  MiniLM -> ONNX for the service (``rec_contract.text_encoder``)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from rec_contract.atomic import atomic_write_text
from rec_contract.logs import configure_logging

log = logging.getLogger("offline_jobs")


def work_dir() -> Path:
    return Path(os.environ.get("PROFILEREC_WORK_DIR", "var"))


def default_out(dataset: str, strategy: str) -> Path:
    name = Path(dataset).name if ("/" in dataset or os.sep in dataset) else dataset
    return work_dir() / "profiles" / f"{name}-{strategy}"


def _add_data_args(p: argparse.ArgumentParser) -> None:
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


def _add_embed_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--embed-backend", default=None, help="minilm (default) | openai")
    p.add_argument("--embed-batch-size", type=int, default=64, help="texts per embedding batch")


def _add_upload_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--qdrant-path", default=None, help="qdrant-client local mode folder (default var/qdrant)")
    p.add_argument("--qdrant-url", default=None, help="Qdrant server URL (instead of local mode)")
    p.add_argument("--qdrant-api-key", default=None, help="Qdrant API key (server mode)")
    p.add_argument("--no-alias", action="store_true", help="do not point the 'profiles' alias at it")


def _version(args: argparse.Namespace, strategy: str) -> str:
    if args.version:
        return str(args.version)
    name = Path(args.dataset).name
    return f"{name}-{strategy}"


def _write_report(out: Path, name: str, report: dict[str, Any]) -> None:
    atomic_write_text(out / name, json.dumps(report, indent=2, default=str))


# ---------------------------------------------------------------------- commands
def cmd_extractive(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from offline_jobs.context import load_context
    from offline_jobs.profiles.extractive import build_extractive_rows
    from offline_jobs.selection import select
    from rec_contract.profile_store import write_profiles

    started = time.perf_counter()
    ctx = load_context(args.dataset, args.split_method, args.split_seed, args.data_dir)
    users = select(ctx.dataset, "user", args.users, args.limit)
    items = select(ctx.dataset, "item", args.items, args.limit)
    out = Path(args.out) if args.out else default_out(args.dataset, "extractive")
    version = _version(args, "extractive")
    with tqdm(total=len(users) + len(items), desc="extractive profiles", unit="entity") as bar:
        rows = build_extractive_rows(ctx, args.k, version, users, items, progress=bar.update)
    write_profiles(out, rows)
    report: dict[str, Any] = {
        "command": "extractive",
        "dataset": ctx.name,
        "split": {"method": ctx.split_method, "seed": ctx.split_seed},
        "k": args.k,
        "version": version,
        "users": len(users),
        "items": len(items),
        "profiles": len(rows),
        "profile_seconds": round(time.perf_counter() - started, 2),
    }
    if not args.no_embed:
        report.update(_embed_store(out, args.embed_backend, args.embed_batch_size, version))
    report["wall_seconds"] = round(time.perf_counter() - started, 2)
    _write_report(out, "extractive_report.json", report)
    print(json.dumps(report, indent=2))
    return 0


def _embed_store(
    out: Path, backend: str | None, batch_size: int, version: str | None = None
) -> dict[str, Any]:
    from tqdm import tqdm

    from offline_jobs.jobs.embedding import embed_profile_rows, get_embedder
    from offline_jobs.settings import JobSettings
    from rec_contract.profile_store import read_profiles, write_profile_vectors

    settings = JobSettings()
    backend = backend or settings.embed_backend
    started = time.perf_counter()
    rows = read_profiles(out)
    rows.sort(key=lambda r: (r["entity_type"], r["entity_id"], r["slot"]))
    embedder = get_embedder(backend, batch_size, settings)
    with tqdm(total=len(rows), desc="embedding", unit="profile") as bar:
        entries = embed_profile_rows(rows, embedder, batch_size=max(batch_size, 256), progress=bar.update)
    version = version or (str(rows[0]["version"]) if rows else "unknown")
    write_profile_vectors(out, entries, embedder.model_id, version)
    seconds = time.perf_counter() - started
    return {
        "embedding_model": embedder.model_id,
        "embedded_profiles": len(rows),
        "embed_seconds": round(seconds, 2),
        "embed_profiles_per_s": round(len(rows) / max(seconds, 1e-9), 1),
    }


def cmd_embed(args: argparse.Namespace) -> int:
    out = Path(args.store)
    report = _embed_store(out, args.embed_backend, args.embed_batch_size)
    _write_report(out, "embed_report.json", report)
    print(json.dumps(report, indent=2))
    return 0


def cmd_export_text_encoder(args: argparse.Namespace) -> int:
    from offline_jobs.jobs.embedding import export_text_encoder

    out = export_text_encoder(args.out)
    print(f"exported text encoder to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="profilerec-jobs", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("extractive", help="deterministic extractive profile store (+ vectors)")
    _add_data_args(p)
    _add_embed_args(p)
    p.add_argument("--no-embed", action="store_true", help="write profiles.parquet only")
    p.set_defaults(func=cmd_extractive)

    p = sub.add_parser("embed", help="embed a profile store's profiles.parquet")
    p.add_argument("store", help="profile store folder")
    _add_embed_args(p)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("export-text-encoder", help="export MiniLM to ONNX for the service")
    p.add_argument(
        "--out", default=str(work_dir() / "text_encoder"), help="output folder of the ONNX text encoder"
    )
    p.set_defaults(func=cmd_export_text_encoder)

    _register_llm_commands(sub)
    from offline_jobs.refresh import job as refresh

    refresh.register(sub)
    return parser


def _register_llm_commands(sub: Any) -> None:
    try:
        from offline_jobs.cli import llm as runner_cli
    except ImportError:  # pragma: no cover - during development only
        return
    runner_cli.register(sub, _add_data_args, _add_embed_args, _add_upload_args)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(fmt=os.environ.get("PROFILEREC_LOG_FORMAT", "text"))
    try:
        code = int(args.func(args))
    except (ValueError, FileNotFoundError) as exc:
        log.error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
