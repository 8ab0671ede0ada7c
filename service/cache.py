"""Redis cache of fused user vectors (the user tower's output), with explicit invalidation.

What a known user's answer needs that does not change per request is the user tower's output; it
depends on the bundle, the user's profiles and (Mult-VAE) the user's history. Entries are keyed by
bundle version (a new bundle never reads an old one's vectors) and *tagged* with what they were
computed from:

* the entity's **generation token** (``profilerec:gen:user:<id>``), a random value replaced whenever
  the user's profiles are rewritten (the refresh job, the admin route);
* the number of feedback events the service knows for the user and the local profile revision.

A read is one round trip (``MGET`` of the token and the entry); an entry whose tag differs from the
current one is a miss. This closes the cache-aside race: a request that read the old profiles before a
refresh replaced them writes its entry under the old token, which no later read accepts. A missing token
(never set, evicted, or a new Redis) is created with ``SET NX`` by the read that missed, before it
reads the inputs, so a stale entry can never match a token created after it.

Redis is a cache, never a dependency: every error is absorbed (counted in the metrics), and after one the
cache is skipped for ``retry_after_s`` so a dead Redis adds no latency to requests.
"""

from __future__ import annotations

import logging
import secrets
import struct
import time
from collections import OrderedDict
from typing import Any

import numpy as np
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from rec_contract.naming import generation_key, user_vector_key
from service.metrics import CACHE_REQUESTS, DEPENDENCY_UP, ERRORS

log = logging.getLogger(__name__)
_LEN = struct.Struct("<H")

HIT = CACHE_REQUESTS.labels(result="hit")
MISS = CACHE_REQUESTS.labels(result="miss")
STALE = CACHE_REQUESTS.labels(result="stale")
SKIPPED = CACHE_REQUESTS.labels(result="skipped")
ERROR = CACHE_REQUESTS.labels(result="error")


def encode_entry(tag: str, vector: np.ndarray) -> bytes:
    head = tag.encode()
    return _LEN.pack(len(head)) + head + np.ascontiguousarray(vector, dtype="<f4").tobytes()


def decode_entry(raw: bytes) -> tuple[str, np.ndarray]:
    (size,) = _LEN.unpack_from(raw)
    tag = raw[_LEN.size : _LEN.size + size].decode()
    return tag, np.frombuffer(raw, dtype="<f4", offset=_LEN.size + size)


class TaggedLru:
    """A bounded in-process LRU whose entries are valid only under the tag they were stored with.

    Used for what a worker can check without a round trip: user vectors when the profile source's
    changes all reach this process (:attr:`service.profiles.ProfileSource.local_revisions`: the local
    tag, feedback count and profile revision, is the whole truth), and users' candidate lists (tagged
    with the vector's tag and the item index's revision)."""

    def __init__(self, max_entries: int, counted: bool = False) -> None:
        self.max_entries = max_entries
        self.counted = counted
        self.entries: OrderedDict[tuple[str, str], tuple[str, Any]] = OrderedDict()

    def get(self, key: tuple[str, str], tag: str) -> Any | None:
        found = self.entries.get(key)
        if found is None or found[0] != tag:
            return None
        self.entries.move_to_end(key)
        if self.counted:
            HIT.inc()
        return found[1]

    def put(self, key: tuple[str, str], tag: str, value: Any) -> None:
        if self.max_entries <= 0:
            return
        self.entries[key] = (tag, value)
        self.entries.move_to_end(key)
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)


class VectorCache:
    def __init__(self, url: str | None, timeout_s: float, ttl_s: int, retry_after_s: float) -> None:
        self.url = url
        self.ttl_s = ttl_s
        self.retry_after_s = retry_after_s
        self._skip_until = 0.0
        self.last_error: str | None = None
        self.client: aioredis.Redis | None = (
            aioredis.Redis.from_url(
                url,
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                health_check_interval=30,
                # after a Redis restart every pooled connection is dead: retry once, at once, on a
                # new one instead of failing (found by the issue-15 replay: /readyz said degraded and
                # the cache was skipped for retry_after_s); a timeout is not retried
                retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            )
            if url
            else None
        )

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

    async def get_user_vector(
        self, bundle_version: str, user_id: str, local_tag: str
    ) -> tuple[np.ndarray | None, str | None]:
        """``(vector, token)``: the cached vector when its tag is current (else None), and the user's
        generation token (None when it has none yet or Redis is unavailable)."""
        if not self._available():
            SKIPPED.inc()
            return None, None
        assert self.client is not None
        try:
            token, raw = await self.client.mget(
                generation_key("user", user_id), user_vector_key(bundle_version, user_id)
            )
        except (RedisError, OSError) as exc:
            self._failed(exc, "mget")
            ERROR.inc()
            return None, None
        self._ok()
        token_s = token.decode() if isinstance(token, bytes) else token
        if token_s is None:  # a token before the inputs are read: a refresh after it replaces it
            MISS.inc()
            return None, await self._create_token(user_id)
        return self._current(raw, f"{token_s}|{local_tag}"), token_s

    @staticmethod
    def _current(raw: bytes | str | None, expected_tag: str) -> np.ndarray | None:
        """The cached vector if there is one under ``expected_tag`` (counts the outcome)."""
        if raw is None:
            MISS.inc()
            return None
        try:
            tag, vector = decode_entry(raw if isinstance(raw, bytes) else raw.encode())
        except (ValueError, struct.error, UnicodeDecodeError):
            ERROR.inc()
            return None
        if tag != expected_tag:
            STALE.inc()
            return None
        HIT.inc()
        return vector

    async def _create_token(self, user_id: str) -> str | None:
        """The user's token, created now unless another request just did (``SET NX GET``)."""
        assert self.client is not None
        fresh = secrets.token_hex(8)
        try:
            previous = await self.client.set(generation_key("user", user_id), fresh, nx=True, get=True)
        except (RedisError, OSError) as exc:
            self._failed(exc, "set token")
            return None
        if previous is None:
            return fresh
        return previous.decode() if isinstance(previous, bytes) else str(previous)

    async def put_user_vector(
        self, bundle_version: str, user_id: str, token: str | None, local_tag: str, vector: np.ndarray
    ) -> None:
        """Cache ``vector`` under ``token``: the token :meth:`get_user_vector` returned, read *before*
        the inputs were read (None: Redis was unavailable, nothing is cached)."""
        if token is None or not self._available():
            return
        assert self.client is not None
        try:
            await self.client.set(
                user_vector_key(bundle_version, user_id),
                encode_entry(f"{token}|{local_tag}", vector),
                ex=self.ttl_s,
            )
        except (RedisError, OSError) as exc:
            self._failed(exc, "set")
            return
        self._ok()

    async def invalidate(self, entity_type: str, raw_ids: list[str]) -> int:
        """Give each entity a new generation token: every cached value computed from its old profiles
        is a miss from now on. Returns how many tokens were replaced (0 when Redis is unavailable; see
        :attr:`last_error`)."""
        if not raw_ids or not self._available():
            return 0
        assert self.client is not None
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for raw in raw_ids:
                    pipe.set(generation_key(entity_type, raw), secrets.token_hex(8))
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._failed(exc, "invalidate")
            return 0
        self._ok()
        return len(raw_ids)

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
        DEPENDENCY_UP.labels(dependency="redis").set(1)
        return None

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
