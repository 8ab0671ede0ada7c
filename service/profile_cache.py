"""Redis cache of profile vectors, in front of the Qdrant profiles collection.

Keys are versioned by the profile set (``rec_contract.naming.profile_cache_key``) and expire after a
TTL; the refresh job deletes the keys of the entities it regenerates. Values are a small binary
record: a 4-byte header length, a JSON header (k, dim, texts) and the float32 ``[k, dim]`` matrix.

Redis is a cache, never a dependency: every error is absorbed (counted in the metrics), and after one
the cache is skipped for ``retry_after_s`` so a dead Redis adds no latency to requests.
"""

from __future__ import annotations

import json
import logging
import struct
import time
from dataclasses import dataclass

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from rec_contract.naming import profile_cache_key, seen_items_key
from service.metrics import CACHE_REQUESTS, DEPENDENCY_UP, ERRORS

log = logging.getLogger(__name__)
_HEADER = struct.Struct("<I")


@dataclass
class EntityProfiles:
    """The K embedded profiles of one user or item, with their texts."""

    vectors: np.ndarray  # float32 [k, dim]
    texts: list[str]

    def encode(self) -> bytes:
        header = json.dumps(
            {"k": int(self.vectors.shape[0]), "dim": int(self.vectors.shape[1]), "texts": self.texts}
        )
        head = header.encode()
        return _HEADER.pack(len(head)) + head + np.ascontiguousarray(self.vectors, dtype="<f4").tobytes()

    @classmethod
    def decode(cls, raw: bytes) -> EntityProfiles:
        (size,) = _HEADER.unpack_from(raw)
        header = json.loads(raw[_HEADER.size : _HEADER.size + size])
        data = np.frombuffer(raw, dtype="<f4", offset=_HEADER.size + size)
        return cls(
            vectors=data.reshape(header["k"], header["dim"]).astype(np.float32), texts=list(header["texts"])
        )


class ProfileCache:
    def __init__(self, url: str | None, timeout_s: float, ttl_s: int, retry_after_s: float) -> None:
        self.url = url
        self.ttl_s = ttl_s
        self.retry_after_s = retry_after_s
        self._skip_until = 0.0
        self.last_error: str | None = None
        self.client: aioredis.Redis | None = (
            aioredis.Redis.from_url(
                url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, health_check_interval=30
            )
            if url
            else None
        )

    @property
    def enabled(self) -> bool:
        return self.client is not None

    def _available(self) -> bool:
        return self.client is not None and time.monotonic() >= self._skip_until

    def _failed(self, exc: Exception, op: str) -> None:
        self._skip_until = time.monotonic() + self.retry_after_s
        self.last_error = f"{type(exc).__name__}: {exc}"
        DEPENDENCY_UP.labels(dependency="redis").set(0)
        ERRORS.labels(type="redis_unavailable").inc()
        log.warning("redis unavailable; serving without cache", extra={"op": op, "reason": self.last_error})

    def _ok(self) -> None:
        if self.last_error is not None:
            log.info("redis reachable again")
        self.last_error = None
        DEPENDENCY_UP.labels(dependency="redis").set(1)

    async def get(self, version: str, entity_type: str, raw_id: str) -> EntityProfiles | None:
        if not self._available():
            CACHE_REQUESTS.labels(result="skipped").inc()
            return None
        assert self.client is not None
        try:
            raw = await self.client.get(profile_cache_key(version, entity_type, raw_id))
        except (RedisError, OSError) as exc:
            self._failed(exc, "get")
            CACHE_REQUESTS.labels(result="error").inc()
            return None
        self._ok()
        if raw is None:
            CACHE_REQUESTS.labels(result="miss").inc()
            return None
        try:
            value = EntityProfiles.decode(raw if isinstance(raw, bytes) else raw.encode())
        except (ValueError, KeyError, struct.error) as exc:
            log.warning(
                "corrupt cache entry dropped", extra={"entity": f"{entity_type}:{raw_id}", "reason": str(exc)}
            )
            CACHE_REQUESTS.labels(result="error").inc()
            return None
        CACHE_REQUESTS.labels(result="hit").inc()
        return value

    async def put(self, version: str, entity_type: str, raw_id: str, value: EntityProfiles) -> None:
        if not self._available():
            return
        assert self.client is not None
        try:
            await self.client.set(
                profile_cache_key(version, entity_type, raw_id), value.encode(), ex=self.ttl_s
            )
        except (RedisError, OSError) as exc:
            self._failed(exc, "set")
            return
        self._ok()

    async def invalidate(self, version: str, entity_type: str, raw_ids: list[str]) -> int:
        if not raw_ids or not self._available():
            return 0
        assert self.client is not None
        try:
            deleted = await self.client.delete(*(profile_cache_key(version, entity_type, r) for r in raw_ids))
        except (RedisError, OSError) as exc:
            self._failed(exc, "delete")
            return 0
        self._ok()
        return int(deleted)

    async def add_seen(self, by_user: dict[str, list[str]]) -> None:
        """Record items users just interacted with (from feedback), for seen-item filtering."""
        if not by_user or not self._available():
            return
        assert self.client is not None
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for user, items in by_user.items():
                    pipe.sadd(seen_items_key(user), *items)
                    pipe.expire(seen_items_key(user), 30 * 24 * 3600)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._failed(exc, "sadd")
            return
        self._ok()

    async def seen(self, raw_user_id: str) -> set[str]:
        if not self._available():
            return set()
        assert self.client is not None
        try:
            members = await self.client.smembers(seen_items_key(raw_user_id))
        except (RedisError, OSError) as exc:
            self._failed(exc, "smembers")
            return set()
        self._ok()
        return {m.decode() if isinstance(m, bytes) else str(m) for m in members}

    async def ping(self) -> str | None:
        """None when Redis answers, else the reason. Always tries (ignores the skip window)."""
        if self.client is None:
            return "disabled (no PROFILEREC_REDIS_URL)"
        try:
            await self.client.ping()
        except (RedisError, OSError) as exc:
            self._failed(exc, "ping")
            return self.last_error
        self._skip_until = 0.0
        self._ok()
        return None

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
