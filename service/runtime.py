"""What the lifespan opens once: the stores, the cache, the feedback index and the live bundle.

The live bundle is served together with its item index and its profile source (:class:`Live`); a new
bundle is loaded completely (verified, ONNX sessions opened, its item index built) off the event loop
before one reference assignment switches to it, so no request waits for a promotion and none pairs a
user tower with another bundle's items.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from rec_contract.bundle import BundleError, resolve_pointer
from rec_contract.paths import CONTENT_INDEX_SUFFIX
from service.batching import MicroBatcher
from service.bundle_runtime import LoadedBundle, load_bundle
from service.cache import TaggedLru, VectorCache
from service.catalogue_sync import reconcile_items
from service.categories import KnownCategories
from service.content import ContentModel
from service.errors import DependencyUnavailableError, NotReadyError
from service.feedback_index import FeedbackIndex
from service.metrics import BUNDLE_RELOADS, set_model_info
from service.pipeline import Pipeline
from service.profiles import LocalProfiles, ProfileSource, QdrantProfiles
from service.settings import ServiceSettings
from service.stores.base import ItemEngine, ItemIndex
from service.stores.local import LocalEngine
from service.stores.qdrant import QdrantConnection, QdrantEngine
from service.towers import stack_feeds

log = logging.getLogger(__name__)
BUNDLE_RETRY_MAX_S = 8.0  # load_until_served: the longest wait between two attempts


@dataclass
class Live:
    """A bundle with the item index and profile source of its vector space, and the index of its items'
    content vectors (``None`` when the bundle has none: text requests then use the user tower alone)."""

    bundle: LoadedBundle
    items: ItemIndex
    profiles: ProfileSource
    content: ContentModel
    content_index: ItemIndex | None = None
    encode_text: MicroBatcher = field(init=False)
    user_tower: MicroBatcher = field(init=False)

    def __post_init__(self) -> None:
        """Concurrent requests share text-encoder and user-tower calls (see service.batching)."""
        tower = self.bundle.user_tower
        self.encode_text = MicroBatcher(self.bundle.text_encoder.encode)
        self.user_tower = MicroBatcher(lambda feeds: tower(**stack_feeds(feeds)))

    @property
    def version(self) -> str:
        return self.bundle.version

    def sync(self) -> None:
        """Apply what other processes wrote (items, profiles) since the last request: a ``stat`` each."""
        self.items.sync()
        if self.content_index is not None:
            self.content_index.sync()
        self.profiles.sync()


@dataclass
class BundleHolder:
    """What is being served. Switching is one reference assignment, after the new one is ready."""

    current: Live | None = None
    error: str | None = None  # the reason, for the log and the admin reload answer (never /readyz)
    # missing: no bundle pointed at; refused: it failed its checks; waiting: a store it needs is unreachable
    state: Literal["ok", "missing", "refused", "waiting"] = "missing"
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def require(self) -> Live:
        live = self.current
        if live is None:
            raise NotReadyError(f"no model bundle is loaded ({self.state}; the service log says why)")
        return live


@dataclass
class Runtime:
    settings: ServiceSettings
    engine: ItemEngine
    cache: VectorCache
    feedback: FeedbackIndex
    pipeline: Pipeline
    local_cache: TaggedLru
    categories: KnownCategories
    qdrant: QdrantConnection | None = None
    holder: BundleHolder = field(default_factory=BundleHolder)
    _unready: tuple[str | None, str | None] = (None, None)

    def _profiles(self, bundle: LoadedBundle) -> ProfileSource:
        manifest = bundle.manifest
        if self.qdrant is not None:
            return QdrantProfiles(self.qdrant, manifest.profiles_collection, manifest.profiles.store_version)
        return LocalProfiles(
            bundle.path,
            bundle.user_index,
            bundle.item_index,
            manifest.profiles.k,
            manifest.profiles.text_dim,
            self.settings.online_dir / f"profiles-{manifest.profiles.store_version}.jsonl",
        )

    async def open_live(self, bundle: LoadedBundle) -> Live:
        items = await self.engine.open(
            bundle.version,
            bundle.manifest.items_collection,
            bundle.item_ids,
            bundle.item_vectors,
            bundle.items_meta,
        )
        content_index = None
        if bundle.item_content is not None:
            content_index = await self.engine.open(
                f"{bundle.version}{CONTENT_INDEX_SUFFIX}",
                f"{bundle.manifest.items_collection}_content",
                bundle.item_ids,
                bundle.item_content,
                bundle.items_meta,
            )
        profiles = await asyncio.to_thread(self._profiles, bundle)
        content = await asyncio.to_thread(
            ContentModel,
            bundle.item_vectors,
            bundle.item_content,
            np.array([int(m.get("popularity", 0)) for m in bundle.items_meta]),
            self.settings.content_settings(),
        )
        live = Live(bundle, items, profiles, content, content_index)
        # what the API changed while another bundle was live (the catalogue log is the record)
        await reconcile_items(
            live, self.settings.catalog_log, self.settings.online_dir, self.settings.snippet_chars
        )
        return live

    async def refresh_bundle(self) -> bool:
        """Load the bundle ``current`` points at, if it differs from the one served. True if switched."""
        async with self.holder._lock:
            try:
                target = resolve_pointer(self.settings.bundles_root)
            except BundleError as exc:
                if self.holder.current is None:
                    self.holder.error, self.holder.state = str(exc), "missing"
                return False
            served = self.holder.current
            if served is not None and served.bundle.path == target:
                return False
            try:
                bundle = await asyncio.to_thread(load_bundle, target, self.settings.verify_checksums)
                live = await self.open_live(bundle)
            except (BundleError, DependencyUnavailableError, OSError, ValueError) as exc:
                BUNDLE_RELOADS.labels(outcome="failed").inc()
                waiting = isinstance(exc, DependencyUnavailableError)  # the bundle is fine, a store is not
                verb = "waits for a store" if waiting else "refused"
                self.holder.error = f"bundle {target.name} {verb}: {exc}"
                self.holder.state = "waiting" if waiting else "refused"
                log.error(
                    "bundle load failed; keeping the current one",
                    extra={"bundle": str(target), "reason": str(exc)},
                )
                return False
            self.holder.current = live
            self.holder.error, self.holder.state = None, "ok"
            BUNDLE_RELOADS.labels(outcome="loaded").inc()
            set_model_info(bundle.version, bundle.kind, bundle.manifest.proex, bundle.manifest.dataset.name)
            log.info(
                "serving bundle",
                extra={
                    "bundle_version": bundle.version,
                    "previous": served.version if served else None,
                    "engine": live.items.engine,
                },
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

    async def load_until_served(self) -> None:
        """Without a bundle watcher (``reload_interval_s`` 0), retry loading the pointed bundle until one
        is served: a service started while its Qdrant was unreachable serves once Qdrant answers,
        without a restart. Retries back off from 1 s to ``BUNDLE_RETRY_MAX_S``."""
        delay = 1.0
        while self.holder.current is None:
            await asyncio.sleep(delay)
            try:
                await self.refresh_bundle()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep retrying whatever happened
                log.exception("bundle load retry failed")
            delay = min(2 * delay, BUNDLE_RETRY_MAX_S)

    async def ping_store(self) -> str | None:
        return await self.engine.ping()

    def log_unready(self, store: str | None, redis: str | None) -> None:
        """The reasons /readyz does not show (a warning when they change, not at every probe)."""
        reasons = (store, redis)
        if reasons != self._unready:
            self._unready = reasons
            log.warning("readiness check failing", extra={"store": store, "redis": redis})

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.cache.close()
        with contextlib.suppress(Exception):
            await self.engine.close()


def build_runtime(settings: ServiceSettings) -> Runtime:
    qdrant: QdrantConnection | None = None
    engine: ItemEngine
    if settings.engine == "qdrant" or (settings.engine == "auto" and settings.qdrant_url):
        qdrant = QdrantConnection(
            settings.qdrant_url,
            Path(settings.qdrant_path),
            settings.qdrant_api_key,
            settings.qdrant_timeout_s,
            settings.qdrant_exact_search,
        )
        engine = QdrantEngine(qdrant)
    else:
        kind = "auto" if settings.engine == "auto" else settings.engine
        engine = LocalEngine(settings.online_dir, kind, settings.edge_above_items, settings.edge_ef)
    return Runtime(
        settings=settings,
        engine=engine,
        cache=VectorCache(
            settings.redis_url, settings.redis_timeout_s, settings.cache_ttl_s, settings.redis_retry_after_s
        ),
        feedback=FeedbackIndex(settings.feedback_log),
        pipeline=Pipeline(
            snippet_chars=settings.snippet_chars,
            candidates=TaggedLru(settings.local_cache_entries),
            max_n=settings.max_n,
        ),
        local_cache=TaggedLru(settings.local_cache_entries, counted=True),
        categories=KnownCategories(settings.catalog_log),
        qdrant=qdrant,
    )
