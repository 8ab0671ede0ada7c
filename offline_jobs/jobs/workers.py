"""A generation job sharded over worker processes (the embedded backends: one model per process)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from offline_jobs.context import load_context
from offline_jobs.jobs.embedding import get_embedder
from offline_jobs.jobs.runner import ProfileJob
from offline_jobs.jobs.stats import SUMMED
from offline_jobs.llm.registry import create_backend
from offline_jobs.profiles.generation import GenerationConfig
from rec_contract.logs import configure_logging


@dataclass
class WorkerSpec:
    """What a worker process needs to rebuild the job (everything picklable)."""

    dataset: str
    data_dir: str | None
    split_method: str | None
    split_seed: int
    settings: Any  # JobSettings
    embed_backend: str
    embed_batch_size: int


class ParallelProfileJob(ProfileJob):
    """:class:`ProfileJob` whose phases run in ``workers`` processes, each loading its own backend."""

    def _execute_phase(self, entity_type: str, indices: Sequence[int]) -> None:
        """Shard a phase over ``workers`` processes (one model each, one thread each: two single-threaded
        processes use a 2-core CPU better than one process with two synchronised threads). They share the
        job cache (SQLite WAL); the next phase starts when all are done, so items see every user."""
        import multiprocessing as mp

        assert self.worker_spec is not None
        ids = self.ctx.dataset.user_ids if entity_type == "user" else self.ctx.dataset.item_ids
        done = self.cache.done_keys(self.config_digest)
        pending = [i for i in indices if (entity_type, str(ids[i])) not in done]
        skipped = len(indices) - len(pending)
        self.stats.entities_skipped += skipped
        if self.progress and skipped:
            self.progress(self.stats, skipped)
        if not pending:
            return
        wanted = {str(ids[i]) for i in pending}
        spawn = mp.get_context("spawn")
        self._phase_no = getattr(self, "_phase_no", 0) + 1
        run_ids = [f"{self.cache.run_id}-p{self._phase_no}-{w}" for w in range(self.workers)]
        procs = []
        started = time.perf_counter()
        for w in range(self.workers):
            shard = list(pending[w :: self.workers])
            if not shard:
                continue
            proc = spawn.Process(
                target=worker_main,
                args=(
                    self.worker_spec,
                    self.cfg,
                    str(self.out),
                    self.max_active,
                    self.neighbour_embeddings,
                    self.prompt_file,
                    entity_type,
                    shard,
                    run_ids[w],
                ),
                daemon=False,
            )
            proc.start()
            procs.append(proc)
        seen = 0
        try:
            while any(p.is_alive() for p in procs):
                time.sleep(2.0)
                now = sum(
                    1 for t, i in self.cache.done_keys(self.config_digest) if t == entity_type and i in wanted
                )
                if now > seen and self.progress:
                    self.stats.entities_done += now - seen
                    self.progress(self.stats, now - seen)
                seen = max(seen, now)
        finally:
            for proc in procs:
                proc.join(timeout=5 if any(q.exitcode not in (0, None) for q in procs) else None)
                if proc.is_alive():
                    proc.kill()
        failed = [p.exitcode for p in procs if p.exitcode != 0]
        if failed:
            raise RuntimeError(
                f"{len(failed)} worker process(es) failed (exit codes {failed}); re-run to resume"
            )
        self.stats.generate_seconds += time.perf_counter() - started
        now = sum(1 for t, i in self.cache.done_keys(self.config_digest) if t == entity_type and i in wanted)
        self.stats.entities_done += now - seen
        for run in self.cache.runs():
            if run["run_id"] in run_ids and run["stats"]:
                st = run["stats"]
                for key in SUMMED:
                    setattr(self.stats, key, getattr(self.stats, key) + int(st.get(key, 0)))
                self.stats.embed_seconds += float(st.get("embed_seconds", 0.0))
        self._load_done()


def worker_main(
    spec: WorkerSpec,
    cfg: GenerationConfig,
    out: str,
    max_active: int,
    neighbour_embeddings: str | Path | None,
    prompt_file: str | Path | None,
    entity_type: str,
    shard: list[int],
    run_id: str,
) -> None:
    """One worker process: its own model, one shard of one phase, results into the shared cache."""

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    configure_logging(fmt=os.environ.get("PROFILEREC_LOG_FORMAT", "text"))
    ctx = load_context(spec.dataset, spec.split_method, spec.split_seed, spec.data_dir)
    backend = create_backend(spec.settings)
    embedder = get_embedder(spec.embed_backend, spec.embed_batch_size, spec.settings)
    job = ProfileJob(
        ctx, backend, embedder, out, cfg, max_active, neighbour_embeddings, prompt_file, run_id=run_id
    )
    try:
        job._load_done()
        if entity_type == "item" and any(ctx.item_popularity[i] == 0 for i in shard):
            job.embed_item_texts()
        job._run_phase(entity_type, shard)
        job.cache.finish_run(job.stats.as_dict())
    finally:
        job.close()
        backend.close()
