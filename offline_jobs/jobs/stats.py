"""A generation job's counters (:class:`RunStats`) and its per-run embedding memo."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from offline_jobs.jobs.embedding import Embedder

# the counters a parallel phase adds up from its workers' runs
SUMMED = (
    "entities_failed", "profiles", "fallbacks", "requests", "generated", "cache_hits", "backend_calls",
    "completion_tokens", "prompt_tokens", "embedded_texts", "rounds", "sim_regenerations",
)  # fmt: skip


@dataclass
class RunStats:
    started: float = field(default_factory=time.perf_counter)
    entities_done: int = 0
    entities_skipped: int = 0
    entities_failed: int = 0
    profiles: int = 0
    fallbacks: int = 0
    requests: int = 0
    generated: int = 0
    cache_hits: int = 0
    backend_calls: int = 0
    completion_tokens: int = 0
    prompt_tokens: int = 0
    generate_seconds: float = 0.0
    embed_seconds: float = 0.0
    embedded_texts: int = 0
    rounds: int = 0
    sim_regenerations: int = 0

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def as_dict(self) -> dict[str, Any]:
        elapsed = self.elapsed()
        d = {k: v for k, v in self.__dict__.items() if k != "started"}
        d["wall_seconds"] = round(elapsed, 2)
        d["profiles_per_s"] = round(self.profiles / max(elapsed, 1e-9), 3)
        d["tokens_per_s"] = round(self.completion_tokens / max(self.generate_seconds, 1e-9), 1)
        d["fallback_rate"] = round(self.fallbacks / max(self.profiles, 1), 4)
        return d


class CachingEmbedder:
    """Embeds each distinct text once per run (the similarity loop re-embeds unchanged texts)."""

    def __init__(self, embedder: Embedder, stats: RunStats) -> None:
        self.embedder = embedder
        self.stats = stats
        self.memo: dict[str, np.ndarray] = {}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self.memo))
        if missing:
            started = time.perf_counter()
            vecs = self.embedder.embed(missing)
            self.stats.embed_seconds += time.perf_counter() - started
            self.stats.embedded_texts += len(missing)
            for t, v in zip(missing, vecs, strict=True):
                self.memo[t] = v
        if len(self.memo) > 50_000:
            keep = set(texts)
            self.memo = {t: v for t, v in self.memo.items() if t in keep}
        return (
            np.stack([self.memo[t] for t in texts]) if texts else np.zeros((0, self.embedder.dim), np.float32)
        )
