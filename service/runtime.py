"""What the lifespan opens once: the live bundle (hot-reloaded), the Qdrant index, the Redis cache."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from rec_contract.bundle import BundleError, resolve_pointer
from service.bundle_runtime import LoadedBundle, load_bundle
from service.errors import DependencyUnavailableError, NotReadyError
from service.metrics import BUNDLE_RELOADS, set_model_info
from service.profile_cache import ProfileCache
from service.settings import ServiceSettings
from service.vector_index import VectorIndex

log = logging.getLogger(__name__)


@dataclass
class BundleHolder:
    """The bundle being served. Switching is one reference assignment, after the new one is ready."""

    current: LoadedBundle | None = None
    error: str | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def require(self) -> LoadedBundle:
        bundle = self.current
        if bundle is None:
            raise NotReadyError(f"no model bundle is loaded: {self.error or 'not loaded yet'}")
        return bundle


@dataclass
class Runtime:
    settings: ServiceSettings
    index: VectorIndex
    cache: ProfileCache
    holder: BundleHolder = field(default_factory=BundleHolder)

    async def refresh_bundle(self) -> bool:
        """Load the bundle ``current`` points at, if it differs from the one served. True if switched."""
        async with self.holder._lock:
            try:
                target = resolve_pointer(self.settings.bundles_root)
            except BundleError as exc:
                if self.holder.current is None:
                    self.holder.error = str(exc)
                return False
            served = self.holder.current
            if served is not None and served.path == target:
                return False
            try:
                bundle = await asyncio.to_thread(load_bundle, target, self.settings.verify_checksums)
                await self.index.ensure_items_collection(
                    bundle.manifest.items_collection, bundle.item_ids, bundle.item_vectors, bundle.items_meta
                )
            except (BundleError, DependencyUnavailableError, OSError, ValueError) as exc:
                BUNDLE_RELOADS.labels(outcome="failed").inc()
                self.holder.error = f"bundle {target.name} refused: {exc}"
                log.error(
                    "bundle load failed; keeping the current one",
                    extra={"bundle": str(target), "reason": str(exc)},
                )
                return False
            self.holder.current = bundle
            self.holder.error = None
            BUNDLE_RELOADS.labels(outcome="loaded").inc()
            set_model_info(bundle.version, bundle.kind, bundle.manifest.proex, bundle.manifest.dataset.name)
            log.info(
                "serving bundle",
                extra={"bundle_version": bundle.version, "previous": served.version if served else None},
            )
            return True

    async def watch_bundle(self) -> None:
        """Poll the ``current`` pointer and switch to a newly promoted bundle without a restart."""
        interval = self.settings.reload_interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh_bundle()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep watching whatever happened
                log.exception("bundle watcher iteration failed")

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.cache.close()
        with contextlib.suppress(Exception):
            await self.index.close()


def build_runtime(settings: ServiceSettings) -> Runtime:
    if not settings.qdrant_url:
        Path(settings.qdrant_path).mkdir(parents=True, exist_ok=True)
    return Runtime(
        settings=settings,
        index=VectorIndex(
            settings.qdrant_url,
            str(settings.qdrant_path),
            settings.qdrant_api_key,
            settings.qdrant_timeout_s,
            settings.qdrant_exact_search,
        ),
        cache=ProfileCache(
            settings.redis_url, settings.redis_timeout_s, settings.cache_ttl_s, settings.redis_retry_after_s
        ),
    )
