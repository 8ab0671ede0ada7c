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

from offline_jobs.cli import llm, refresh
from offline_jobs.cli.common import (
    add_data_args,
    add_embed_args,
    default_out,
    store_version,
    work_dir,
    write_report,
)
from rec_contract.logs import configure_logging

log = logging.getLogger("offline_jobs")


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
    version = store_version(args, "extractive")
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
    write_report(out, "extractive_report.json", report)
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
    write_report(out, "embed_report.json", report)
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
    add_data_args(p)
    add_embed_args(p)
    p.add_argument("--no-embed", action="store_true", help="write profiles.parquet only")
    p.set_defaults(func=cmd_extractive)

    p = sub.add_parser("embed", help="embed a profile store's profiles.parquet")
    p.add_argument("store", help="profile store folder")
    add_embed_args(p)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("export-text-encoder", help="export MiniLM to ONNX for the service")
    p.add_argument(
        "--out", default=str(work_dir() / "text_encoder"), help="output folder of the ONNX text encoder"
    )
    p.set_defaults(func=cmd_export_text_encoder)

    llm.register(sub)
    refresh.register(sub)
    return parser


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
