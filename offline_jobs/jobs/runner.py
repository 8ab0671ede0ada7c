"""The generation job: drives the strategy coroutines, batches their requests, caches, resumes.

Phases: users, then items with training interactions (their prompts use the users' profiles), then
items without (their prompts use the most similar items' profiles). Within a phase up to
``max_active`` entities are in flight; every round collects the pending step of each (a list of chat
requests or an embedding request), answers the chat requests from the cache or with ONE backend call,
answers the embedding requests with one embedder call, and advances the coroutines. A finished entity
(K validated profiles, their vectors, similarities) is committed to the job cache before the next
round, and a re-run or a resumed run skips it; generations of unfinished entities are answered from
the cache. The final ``profiles.parquet`` and ``profile_vectors.parquet`` are written atomically at
the end, from the cache, for every selected entity.

With a streaming backend (:class:`~offline_jobs.llm.base.StreamingBackend`: the embedded torch backend)
there are no rounds: each entity's next requests are submitted as soon as its previous ones are
answered, and the backend decodes whatever is queued, so its batch stays full through the whole
phase. The outputs are the same (tested against the round-based path).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from offline_jobs.context import JobContext
from offline_jobs.failures import EntityFailure
from offline_jobs.jobs.cache import CACHE_FILE, JobCache
from offline_jobs.jobs.embedding import Embedder
from offline_jobs.jobs.stats import CachingEmbedder, RunStats
from offline_jobs.llm.base import ChatRequest, GenerationResult, LLMBackend, StreamingBackend
from offline_jobs.profiles.entity_text import EntityText, Neighbours
from offline_jobs.profiles.generation import Coroutine, Embed, GenerationConfig, StrategyContext
from offline_jobs.profiles.prompts import load_prompts
from offline_jobs.profiles.strategies import STRATEGY_FUNCS
from rec_contract.atomic import atomic_write_text
from rec_contract.profile_store import write_profile_vectors, write_profiles

if TYPE_CHECKING:
    from offline_jobs.jobs.workers import WorkerSpec

log = logging.getLogger(__name__)


@dataclass
class _Active:
    entity_type: str
    index: int
    gen: Coroutine
    step: Any


@dataclass
class _Flow(_Active):
    """An entity in the streaming phase: its pending step's answers as they arrive."""

    results: list[Any] = field(default_factory=list)
    missing: int = 0


_EMBED_BATCH = 32  # texts gathered before an embedding call in the streaming phase


class ProfileJob:
    def __init__(
        self,
        ctx: JobContext,
        backend: LLMBackend | None,
        embedder: Embedder,
        out: str | Path,
        cfg: GenerationConfig,
        max_active: int = 32,
        neighbour_embeddings: str | Path | None = None,
        prompt_file: str | Path | None = None,
        progress: Callable[[RunStats, int], None] | None = None,
        model_id: str | None = None,
        workers: int = 1,
        worker_spec: WorkerSpec | None = None,
        run_id: str | None = None,
        cache_path: str | Path | None = None,
        isolate_failures: bool = False,
    ) -> None:
        """``backend`` may be None with ``workers > 1``: workers load their own (``model_id`` names it).

        ``cache_path``: the job cache (default ``<out>/job_cache.sqlite``); a cache shared by several
        outputs answers every generation whose prompt it has seen. ``isolate_failures``: an entity
        whose profile building raises is recorded in :attr:`failures` (and the report) and the others
        go on; otherwise the exception stops the job."""
        if backend is None and (workers < 2 or worker_spec is None or model_id is None):
            raise ValueError("without a backend, give workers > 1, a worker_spec and the model_id")
        self.ctx = ctx
        self.backend = backend
        self.model_id = backend.model_id if backend is not None else str(model_id)
        self.workers = max(1, workers)
        self.worker_spec = worker_spec
        self.neighbour_embeddings = neighbour_embeddings
        self.prompt_file = prompt_file
        self.out = Path(out)
        self.prompts = load_prompts(cfg.strategy, prompt_file)
        self.cfg = GenerationConfig(
            **{
                **cfg.__dict__,
                "model": self.model_id,
                "prompt_version": self.prompts.full_version,
                "dataset": f"{ctx.name}:{ctx.dataset.fingerprint()}",
                "split": f"{ctx.split_method}:{ctx.split_seed}:{ctx.split.fingerprint()}",
            }
        )
        self.config_digest = self.cfg.digest()
        self.stats = RunStats()
        self.embedder = CachingEmbedder(embedder, self.stats)
        self.embedding_model = embedder.model_id
        self.max_active = max(1, max_active)
        self.cache = JobCache(cache_path or self.out / CACHE_FILE, run_id)
        self.isolate_failures = isolate_failures
        self.failures: list[EntityFailure] = []
        texts = EntityText(ctx)
        neighbours = Neighbours(ctx, neighbour_embeddings) if cfg.strategy == "reclm" else None
        self.sc = StrategyContext(self.cfg, self.prompts, texts, neighbours)
        self.progress = progress

    # ------------------------------------------------------------------ execution of one round
    def _chat(self, requests: list[ChatRequest]) -> list[GenerationResult]:
        assert self.backend is not None
        model = self.backend.model_id
        keys = [r.cache_key(model) for r in requests]
        found = self.cache.get_many(keys)
        self.stats.requests += len(requests)
        todo: dict[str, ChatRequest] = {}
        for key, req in zip(keys, requests, strict=True):
            if key not in found and key not in todo:
                todo[key] = req
        self.stats.cache_hits += sum(1 for k in keys if k in found)
        if todo:
            started = time.perf_counter()
            results = self.backend.generate(list(todo.values()))
            self.stats.generate_seconds += time.perf_counter() - started
            self.stats.backend_calls += 1
            self.stats.generated += len(results)
            for res in results:
                self.stats.completion_tokens += res.completion_tokens
                self.stats.prompt_tokens += res.prompt_tokens
            self.cache.put_many(
                (k, r.as_dict(), res) for (k, r), res in zip(todo.items(), results, strict=True)
            )
            found.update(dict(zip(todo, results, strict=True)))
        return [found[k] for k in keys]

    def _pending(self, entity_type: str, indices: Sequence[int]) -> list[int]:
        """``indices`` without the entities an earlier run finished (counted as skipped)."""
        ids = self.ctx.dataset.user_ids if entity_type == "user" else self.ctx.dataset.item_ids
        done = self.cache.done_keys(self.config_digest)
        queue = [i for i in indices if (entity_type, str(ids[i])) not in done]
        skipped = len(indices) - len(queue)
        self.stats.entities_skipped += skipped
        if self.progress and skipped:
            self.progress(self.stats, skipped)
        return queue

    def _run_phase(self, entity_type: str, indices: Sequence[int]) -> None:
        if isinstance(self.backend, StreamingBackend):
            self._run_phase_streaming(entity_type, indices, self.backend)
            return
        func = STRATEGY_FUNCS[self.cfg.strategy]
        queue = self._pending(entity_type, indices)
        position = 0
        active: list[_Active] = []
        while True:
            while len(active) < self.max_active and position < len(queue):
                index = queue[position]
                position += 1
                started = _Active(entity_type, index, func(self.sc, entity_type, index), None)
                if self._advance(started, None):
                    active.append(started)
            if not active:
                break
            self.stats.rounds += 1
            chat: list[ChatRequest] = []
            texts: list[str] = []
            for a in active:
                if isinstance(a.step, Embed):
                    texts.extend(a.step.texts)
                else:
                    chat.extend(a.step)
            chat_results = self._chat(chat) if chat else []
            vectors = self.embedder.embed(texts) if texts else None
            c_pos = t_pos = 0
            still: list[_Active] = []
            for a in active:
                value: Any
                if isinstance(a.step, Embed):
                    n = len(a.step.texts)
                    assert vectors is not None
                    value = vectors[t_pos : t_pos + n]
                    t_pos += n
                else:
                    n = len(a.step)
                    value = chat_results[c_pos : c_pos + n]
                    c_pos += n
                if self._advance(a, value):
                    still.append(a)
            active = still

    def _run_phase_streaming(
        self, entity_type: str, indices: Sequence[int], backend: StreamingBackend
    ) -> None:
        """The phase without rounds, for a backend that decodes a stream of requests.

        An entity's next requests are submitted as soon as its previous ones are answered, so the
        backend's batch stays full instead of draining at the end of every round (the slowest
        request of a round used to hold every other entity back). Cache lookups, in-flight
        de-duplication and the per-entity commit are as in the round-based path; embedding requests
        are gathered and answered together when enough are waiting or nothing else can progress.
        """
        func = STRATEGY_FUNCS[self.cfg.strategy]
        queue = deque(self._pending(entity_type, indices))
        model = backend.model_id
        ready: deque[_Flow] = deque()  # steps that can be answered now
        embedding: list[_Flow] = []  # waiting for vectors
        in_flight: dict[str, list[tuple[_Flow, int]]] = {}  # cache key -> who waits for it
        finished: list[tuple[str, ChatRequest, GenerationResult]] = []
        n_active = 0
        embed_age = 0

        def answered(key: str, request: ChatRequest) -> Callable[[GenerationResult], None]:
            def done(result: GenerationResult) -> None:
                finished.append((key, request, result))
                self.stats.generated += 1
                self.stats.completion_tokens += result.completion_tokens
                self.stats.prompt_tokens += result.prompt_tokens
                for flow, slot in in_flight.pop(key, []):
                    flow.results[slot] = result
                    flow.missing -= 1
                    if flow.missing == 0:
                        ready.append(flow)

            return done

        def dispatch(flow: _Flow) -> None:
            if isinstance(flow.step, Embed):
                embedding.append(flow)
                return
            requests: list[ChatRequest] = flow.step
            keys = [r.cache_key(model) for r in requests]
            found = self.cache.get_many(keys)
            self.stats.requests += len(requests)
            self.stats.cache_hits += sum(1 for k in keys if k in found)
            flow.results = [found.get(k) for k in keys]
            flow.missing = sum(1 for r in flow.results if r is None)
            for slot, (key, req) in enumerate(zip(keys, requests, strict=True)):
                if key in found:
                    continue
                waiters = in_flight.setdefault(key, [])
                waiters.append((flow, slot))
                if len(waiters) == 1:
                    backend.submit(req, answered(key, req))
            if flow.missing == 0:
                ready.append(flow)

        def advance(flow: _Flow, value: Any) -> None:
            nonlocal n_active
            if self._advance(flow, value):
                dispatch(flow)
            else:
                n_active -= 1

        self.stats.backend_calls += 1
        while True:
            while n_active < self.max_active and queue:
                index = queue.popleft()
                n_active += 1
                advance(_Flow(entity_type, index, func(self.sc, entity_type, index), None), None)
            if finished:  # generations first: an entity's commit must find its requests cached
                self.cache.put_many((k, r.as_dict(), res) for k, r, res in finished)
                finished.clear()
            while ready:
                flow = ready.popleft()
                advance(flow, flow.results)
            waiting_texts = sum(len(f.step.texts) for f in embedding)
            if embedding and (waiting_texts >= _EMBED_BATCH or not backend.busy or embed_age >= 8):
                flows, embedding[:] = list(embedding), []
                embed_age = 0
                vectors = self.embedder.embed([t for f in flows for t in f.step.texts])
                offset = 0
                for flow in flows:
                    n = len(flow.step.texts)
                    advance(flow, vectors[offset : offset + n])
                    offset += n
                continue
            if ready or (n_active < self.max_active and queue):
                continue
            if not backend.busy:
                if n_active == 0:
                    break
                if not embedding:  # nothing queued anywhere yet entities wait: a backend lost a request
                    raise RuntimeError(f"{n_active} entities wait for generations the backend does not have")
                continue
            embed_age += bool(embedding)
            started = time.perf_counter()
            backend.step()
            self.stats.generate_seconds += time.perf_counter() - started
            self.stats.rounds += 1

    def _advance(self, a: _Active, value: Any) -> bool:
        """Send ``value`` to the entity's coroutine (None starts it). True while it has a next step;
        False once it finished (committed) or, with ``isolate_failures``, failed (recorded)."""
        stage = "prompt" if a.step is None else "generate"  # building its first prompt, or later steps
        try:
            a.step = a.gen.send(value)
        except StopIteration as stop:
            self._finish(a, stop.value)
            return False
        except Exception as exc:
            if not self.isolate_failures:
                raise
            self._fail(a, f"{self.cfg.strategy}:{stage}", exc)
            return False
        return True

    def _fail(self, a: _Active, stage: str, exc: Exception) -> None:
        ids = self.ctx.dataset.user_ids if a.entity_type == "user" else self.ctx.dataset.item_ids
        failure = EntityFailure.from_exception(a.entity_type, str(ids[a.index]), stage, exc)
        self.failures.append(failure)
        self.stats.entities_failed += 1
        fields = {k: v for k, v in failure.as_dict().items() if k != "traceback"}  # the traceback: exc_info
        log.error("profile failed: %s", failure.message(), exc_info=exc, extra={"failure": fields})
        if self.progress:
            self.progress(self.stats, 1)

    def _finish(self, a: _Active, rows: list[dict[str, Any]]) -> None:
        vectors = rows[0].pop("_vectors", None)
        entity_id = str(rows[0]["entity_id"])
        self.cache.put_entity(self.config_digest, a.entity_type, entity_id, rows, vectors)
        self._remember(a.entity_type, a.index, rows)
        self.stats.entities_done += 1
        self.stats.profiles += len(rows)
        self.stats.fallbacks += sum(bool(r["is_fallback"]) for r in rows)
        self.stats.sim_regenerations += sum(int(r["quality"].get("sim_regenerations", 0)) for r in rows)
        if self.progress:
            self.progress(self.stats, 1)

    def _remember(self, entity_type: str, index: int, rows: list[dict[str, Any]]) -> None:
        text = str(rows[0]["text"])
        if entity_type == "user":
            self.sc.user_profiles[index] = text
        else:
            self.sc.item_profiles[index] = text

    def _load_done(self) -> None:
        """Profiles finished by earlier runs feed the item prompts of this one."""
        u_index = self.ctx.dataset.user_index()
        i_index = self.ctx.dataset.item_index()
        for entity_type, entity_id, rows, _ in self.cache.get_entities(self.config_digest):
            index = (u_index if entity_type == "user" else i_index).get(entity_id)
            if index is not None and rows:
                self._remember(entity_type, index, rows)

    # ------------------------------------------------------------------ the job
    def run(self, users: Sequence[int], items: Sequence[int]) -> dict[str, Any]:
        self._load_done()
        warm = [i for i in items if self.ctx.item_popularity[i] > 0]
        cold = [i for i in items if self.ctx.item_popularity[i] == 0]
        if cold and self.workers == 1:
            self.embed_item_texts()
        for entity_type, indices in (("user", users), ("item", warm), ("item", cold)):
            if not indices:
                continue
            self._execute_phase(entity_type, indices)
        report = self.write_outputs(users, items)
        self.cache.finish_run(report["stats"])
        return report

    def _execute_phase(self, entity_type: str, indices: Sequence[int]) -> None:
        """One phase in this process (:class:`offline_jobs.jobs.workers.ParallelProfileJob` shards it)."""
        self._run_phase(entity_type, indices)

    def embed_item_texts(self) -> None:
        """Vectors of every item's text: the similarity used for items without interactions."""
        texts = [self.sc.texts.item_text(i) for i in range(self.ctx.dataset.n_items)]
        started = time.perf_counter()
        self.sc.item_text_vectors = self.embedder.embedder.embed(texts)
        self.stats.embed_seconds += time.perf_counter() - started

    def write_outputs(self, users: Sequence[int], items: Sequence[int]) -> dict[str, Any]:
        wanted = {("user", str(self.ctx.dataset.user_ids[u])) for u in users}
        wanted |= {("item", str(self.ctx.dataset.item_ids[i])) for i in items}
        rows: list[dict[str, Any]] = []
        entries: list[tuple[str, str, np.ndarray]] = []
        for entity_type, entity_id, entity_rows, vectors in sorted(
            self.cache.get_entities(self.config_digest), key=lambda e: (e[0], e[1])
        ):
            if (entity_type, entity_id) not in wanted:
                continue
            for r in entity_rows:
                r["version"] = self.cfg.version
            rows.extend(entity_rows)
            if vectors is not None:
                entries.append((entity_type, entity_id, vectors))
        missing = len(wanted) - len({(r["entity_type"], r["entity_id"]) for r in rows})
        if rows:
            write_profiles(self.out, rows)
        if entries:
            write_profile_vectors(self.out, entries, self.embedding_model, self.cfg.version)
        stats = self.stats.as_dict()
        stats["cache_regenerated"] = self.cache.regenerated
        backend_stats = getattr(self.backend, "stats", None)
        if isinstance(backend_stats, dict):
            stats["backend"] = {
                k: round(v, 2) if isinstance(v, float) else v for k, v in backend_stats.items()
            }
        report = {
            "command": "generate",
            "run_id": self.cache.run_id,
            "config": {**self.cfg.__dict__, "digest": self.config_digest},
            "embedding_model": self.embedding_model,
            "users": len(users),
            "items": len(items),
            "profiles_written": len(rows),
            "entities_missing": missing,
            "failed": [f.as_dict() for f in self.failures],
            "stats": stats,
        }
        import json

        atomic_write_text(self.out / "run_report.json", json.dumps(report, indent=2, default=str))
        return report

    def close(self) -> None:
        self.cache.close()
