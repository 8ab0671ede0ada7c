"""CLI commands for the LLM jobs: ``generate``, ``upload``, ``pipeline``."""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from offline_jobs.cli.common import (
    add_data_args,
    add_embed_args,
    add_upload_args,
    default_out,
    store_version,
    write_report,
)
from offline_jobs.settings import CANDIDATES_HELP, REPAIR_HELP, JobSettings


def _add_llm_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--strategy",
        default="proex",
        choices=["proex", "reclm", "duet"],
        help="profile strategy: ProEx (K diverse profiles), RecLM or DUET",
    )
    p.add_argument(
        "--llm-backend", default=None, help="torch (default: SmolLM2 embedded) | llama_cpp | openai | fake"
    )
    p.add_argument(
        "--llm-model", default=None, help="openai: served model name; torch/llama_cpp: a GGUF path"
    )
    p.add_argument(
        "--llm-base-url", default=None, help="OpenAI-compatible base URL, e.g. http://localhost:8000/v1"
    )
    p.add_argument("--embed-base-url", default=None, help="embeddings base URL (default: the LLM base URL)")
    p.add_argument("--embed-model", default=None, help="openai embeddings model name")
    p.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="sampling temperature (default: PROFILEREC_TEMPERATURE)",
    )
    p.add_argument(
        "--top-p", type=float, default=None, help="nucleus sampling top-p (default: PROFILEREC_TOP_P)"
    )
    p.add_argument("--max-tokens", type=int, default=None, help="token limit of one profile")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (default: PROFILEREC_SEED)")
    p.add_argument(
        "--batch-size", type=int, default=None, help="sequences decoded together (torch, llama_cpp)"
    )
    p.add_argument(
        "--threads", type=int, default=None, help="CPU threads of the embedded model (torch, llama_cpp)"
    )
    p.add_argument("--concurrency", type=int, default=None, help="requests in flight (openai)")
    p.add_argument("--workers", type=int, default=None, help="processes, each with its own model (embedded)")
    p.add_argument("--max-active", type=int, default=None, help="entities in flight (default 2 x batch size)")
    p.add_argument("--max-retries", type=int, default=2, help="regenerations of rejected output")
    p.add_argument("--candidates", type=int, default=None, help=CANDIDATES_HELP)
    p.add_argument(
        "--repair", action=argparse.BooleanOptionalAction, default=None, help=f"{REPAIR_HELP} (default: on)"
    )
    p.add_argument(
        "--sim-threshold", type=float, default=0.9, help="max cosine of a new profile to OP/siblings"
    )
    p.add_argument("--sim-retries", type=int, default=1, help="regenerations for the similarity constraint")
    p.add_argument("--cf-user-embeddings", default=None, help="reclm: .npy user embeddings for neighbours")
    p.add_argument("--prompt-file", default=None, help="a prompt TOML replacing the packaged one")


def settings_from_args(args: argparse.Namespace) -> JobSettings:
    """Environment/.env settings overridden by the flags that were given."""
    overrides: dict[str, Any] = {}
    mapping = {
        "llm_backend": "llm_backend",
        "llm_model": "llm_model",
        "llm_base_url": "llm_base_url",
        "embed_backend": "embed_backend",
        "embed_base_url": "embed_base_url",
        "embed_model": "embed_model",
        "temperature": "temperature",
        "top_p": "top_p",
        "max_tokens": "max_tokens",
        "seed": "seed",
        "batch_size": "llama_batch_seqs",
        "threads": "llama_threads",
        "concurrency": "llm_concurrency",
        "workers": "job_workers",
        "candidates": "profile_candidates",
        "repair": "grounding_repair",
    }
    for arg, field in mapping.items():
        value = getattr(args, arg, None)
        if value is not None:
            overrides[field] = value
    base = JobSettings()
    return base.model_copy(update=JobSettings.model_validate({**base.model_dump(), **overrides}).model_dump())


def _progress_bar(total: int, desc: str) -> tuple[Any, Callable[[Any, int], None]]:
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="entity", dynamic_ncols=True)

    def update(stats: Any, n: int) -> None:
        bar.update(n)
        elapsed = max(stats.elapsed(), 1e-9)
        bar.set_postfix(
            profiles_s=f"{stats.profiles / elapsed:.2f}",
            tok_s=f"{stats.completion_tokens / max(stats.generate_seconds, 1e-9):.0f}",
            hits=stats.cache_hits,
            fallback=stats.fallbacks,
            refresh=False,
        )

    return bar, update


def run_generate(args: argparse.Namespace) -> dict[str, Any]:
    from offline_jobs.context import load_context
    from offline_jobs.jobs.builder import BuildOptions, new_job
    from offline_jobs.jobs.embedding import get_embedder
    from offline_jobs.jobs.workers import WorkerSpec
    from offline_jobs.selection import select

    settings = settings_from_args(args)
    ctx = load_context(args.dataset, args.split_method, args.split_seed, args.data_dir)
    users = select(ctx.dataset, "user", args.users, args.limit)
    items = select(ctx.dataset, "item", args.items, args.limit)
    out = Path(args.out) if args.out else default_out(args.dataset, args.strategy)
    options = BuildOptions(
        args.strategy,
        args.k,
        store_version(args, args.strategy),
        max_retries=args.max_retries,
        sim_threshold=args.sim_threshold,
        sim_retries=args.sim_retries,
        max_active=args.max_active,
        embed_batch_size=args.embed_batch_size,
        neighbour_embeddings=args.cf_user_embeddings,
        prompt_file=args.prompt_file,
    )
    spec = WorkerSpec(
        dataset=args.dataset,
        data_dir=args.data_dir,
        split_method=args.split_method,
        split_seed=args.split_seed,
        settings=settings,
        embed_backend=settings.embed_backend,
        embed_batch_size=args.embed_batch_size,
    )
    embedder = get_embedder(settings.embed_backend, args.embed_batch_size, settings)
    bar, update = _progress_bar(len(users) + len(items), f"{args.strategy} profiles")
    job, backend = new_job(ctx, settings, embedder, out, options, update, worker_spec=spec)
    try:
        report = job.run(users, items)
    finally:
        bar.close()
        job.close()
        if backend is not None:
            backend.close()
    report["out"] = str(out)
    return report


def run_upload(args: argparse.Namespace, store: Path, version: str | None = None) -> dict[str, Any]:
    from tqdm import tqdm

    from offline_jobs.publish.qdrant_upload import qdrant_client, upload_store

    settings = JobSettings()
    url = args.qdrant_url or settings.qdrant_url
    path = (
        args.qdrant_path
        or settings.qdrant_path
        or str(Path(os.environ.get("PROFILEREC_WORK_DIR", "var")) / "qdrant")
    )
    key = args.qdrant_api_key or (
        settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
    )
    client = qdrant_client(path=None if url else path, url=url, api_key=key)
    try:
        with tqdm(desc="qdrant upload", unit="point") as bar:
            report = upload_store(
                store, client, version=version, set_alias=not args.no_alias, progress=bar.update
            )
    finally:
        client.close()
    report["qdrant"] = url or path
    return report


def register(sub: Any) -> None:
    """The ``generate``, ``upload`` and ``pipeline`` sub-commands."""

    def cmd_generate(args: argparse.Namespace) -> int:
        report = run_generate(args)
        print(json.dumps({k: v for k, v in report.items() if k != "config"}, indent=2, default=str))
        return 0

    def cmd_upload(args: argparse.Namespace) -> int:
        report = run_upload(args, Path(args.store), args.version)
        write_report(Path(args.store), "upload_report.json", report)
        print(json.dumps(report, indent=2))
        return 0

    def cmd_pipeline(args: argparse.Namespace) -> int:
        started = time.perf_counter()
        gen = run_generate(args)
        out = Path(gen["out"])
        up = run_upload(args, out, gen["config"]["version"])
        report = {
            "command": "pipeline",
            "out": str(out),
            "generate": {k: v for k, v in gen.items() if k != "config"},
            "upload": up,
            "wall_seconds": round(time.perf_counter() - started, 1),
        }
        write_report(out, "pipeline_report.json", report)
        print(json.dumps(report, indent=2, default=str))
        return 0

    p = sub.add_parser("generate", help="LLM profiles with validation, fallback and a resumable cache")
    add_data_args(p)
    _add_llm_args(p)
    add_embed_args(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("upload", help="profile vectors -> Qdrant profiles_<version> + alias")
    p.add_argument("store", help="profile store folder")
    p.add_argument("--version", default=None, help="collection version (default: the store's)")
    add_upload_args(p)
    p.set_defaults(func=cmd_upload)

    p = sub.add_parser("pipeline", help="generate + embed + upload (the full run)")
    add_data_args(p)
    _add_llm_args(p)
    add_embed_args(p)
    add_upload_args(p)
    p.set_defaults(func=cmd_pipeline)
