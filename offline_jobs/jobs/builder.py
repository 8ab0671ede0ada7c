"""One entry point that writes a profile store for selected users and items, by strategy.

``extractive`` builds the deterministic facet profiles; ``proex``, ``reclm`` and ``duet`` run the LLM
generation job (validation, fallback, resumable cache). Both embed the profiles and write
``profiles.parquet`` and ``profile_vectors.parquet`` into ``out``. Used by the ``generate`` command,
the bootstrap pipeline and the daily refresh.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from offline_jobs.context import JobContext
from offline_jobs.settings import JobSettings

STRATEGIES = ("proex", "reclm", "duet", "extractive")
EMBEDDED_BACKENDS = ("torch", "llama_cpp", "fake")  # one model per process: worker processes help


@dataclass
class BuildOptions:
    strategy: str
    k: int
    version: str
    max_retries: int = 2
    sim_threshold: float = 0.9
    sim_retries: int = 1
    max_active: int | None = None
    embed_batch_size: int = 64
    neighbour_embeddings: str | Path | None = None
    prompt_file: str | Path | None = None
    # the generation cache (default: in ``out``); one shared cache answers every prompt it has seen
    cache_path: str | Path | None = None
    # record an entity whose profile fails in the report's "failed" list and go on (the refresh)
    isolate_failures: bool = False
    inputs: str = ""  # digest of inputs the dataset fingerprint leaves out (see GenerationConfig)
    # tqdm bars on stderr (entities, then profiles embedded); off when stderr is not a terminal (cron, CI)
    show_progress: bool = field(default_factory=lambda: sys.stderr.isatty())  # noqa: PLW0108 (stderr now, not at import)


def build_profiles(
    ctx: JobContext,
    users: Sequence[int],
    items: Sequence[int],
    out: str | Path,
    options: BuildOptions,
    settings: JobSettings | None = None,
    progress: Callable[[Any, int], None] | None = None,
) -> dict[str, Any]:
    """Write the profiles of ``users`` and ``items`` (indices into ``ctx.dataset``) to the store ``out``."""
    from offline_jobs.jobs.embedding import embed_profile_rows, get_embedder

    if options.strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {options.strategy!r}: one of {', '.join(STRATEGIES)}")
    settings = settings or JobSettings()
    out = Path(out)
    embedder = get_embedder(settings.embed_backend, options.embed_batch_size, settings)
    if options.strategy == "extractive":
        from offline_jobs.failures import EntityFailure
        from offline_jobs.profiles.extractive import build_extractive_rows
        from rec_contract.profile_store import write_profile_vectors, write_profiles

        started = time.perf_counter()
        failures: list[EntityFailure] | None = [] if options.isolate_failures else None
        with _bar(options, len(users) + len(items), "extractive profiles", "entity") as bar:
            rows = build_extractive_rows(
                ctx, options.k, options.version, users, items, progress=bar.update, failures=failures
            )
        if rows:
            write_profiles(out, rows)
            with _bar(options, len(rows), "embedding", "profile") as bar:
                # chunks of 1,024 texts: the embedder sorts each by length, so batches pad little (rows
                # in store order padded 19% more tokens at 64 a chunk on MovieLens' extractive profiles)
                chunk = max(options.embed_batch_size, 1024)
                entries = embed_profile_rows(rows, embedder, chunk, progress=bar.update)
            write_profile_vectors(out, entries, embedder.model_id, options.version)
        return {
            "strategy": "extractive",
            "users": len(users),
            "items": len(items),
            "profiles_written": len(rows),
            "failed": [f.as_dict() for f in failures or []],
            "stats": {"generated": 0, "wall_seconds": round(time.perf_counter() - started, 2)},
        }

    job, backend = new_job(ctx, settings, embedder, out, options, progress)
    try:
        with _bar(options, len(users) + len(items), f"{options.strategy} profiles", "entity") as bar:
            if progress is None:
                job.progress = lambda _stats, n: bar.update(n)
            report = job.run(users, items)
    finally:
        job.close()
        if backend is not None:
            backend.close()
    report["strategy"] = options.strategy
    return report


def new_job(
    ctx: JobContext,
    settings: JobSettings,
    embedder: Any,
    out: Path,
    options: BuildOptions,
    progress: Callable[[Any, int], None] | None = None,
    worker_spec: Any = None,
) -> tuple[Any, Any]:
    """The generation job for ``options``, and the backend it owns (None when worker processes load
    their own): with a ``worker_spec`` and an embedded backend, ``settings.job_workers`` processes; else
    this process. The one place a :class:`ProfileJob` is made (``generate``, bootstrap, refresh)."""
    from offline_jobs.jobs.runner import ProfileJob
    from offline_jobs.llm.registry import backend_model_id, create_backend
    from offline_jobs.profiles.generation import GenerationConfig

    cfg = GenerationConfig.from_settings(
        settings,
        options.strategy,
        options.k,
        options.version,
        max_retries=options.max_retries,
        sim_threshold=options.sim_threshold,
        sim_retries=options.sim_retries,
        inputs=options.inputs,
    )

    common: dict[str, Any] = {
        "max_active": settings.active_entities(options.max_active),
        "neighbour_embeddings": options.neighbour_embeddings,
        "prompt_file": options.prompt_file,
        "progress": progress,
        "cache_path": options.cache_path,
        "isolate_failures": options.isolate_failures,
    }
    workers = settings.job_workers if settings.llm_backend in EMBEDDED_BACKENDS else 1
    if worker_spec is not None and workers > 1:
        from offline_jobs.jobs.workers import ParallelProfileJob

        job = ParallelProfileJob(
            ctx,
            None,
            embedder,
            out,
            cfg,
            model_id=backend_model_id(settings),
            workers=workers,
            worker_spec=worker_spec,
            **common,
        )
        return job, None
    backend = create_backend(settings)
    return ProfileJob(ctx, backend, embedder, out, cfg, **common), backend


def _bar(options: BuildOptions, total: int, desc: str, unit: str) -> Any:
    """A tqdm progress bar, disabled when ``options.show_progress`` is off."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, disable=not options.show_progress)
