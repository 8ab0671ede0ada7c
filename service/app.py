"""The app factory: ``create_app(settings)`` wires settings, lifespan, middleware, errors and routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rec_contract.logs import configure_logging
from service.errors import install_error_handlers
from service.metrics import REQUEST_LATENCY, REQUESTS
from service.openapi import install_live_openapi
from service.request_limits import RequestLimitsMiddleware
from service.routes import admin, api, ops
from service.runtime import build_runtime
from service.settings import ServiceSettings
from service.stores.qdrant import request_budget

log = logging.getLogger(__name__)


class MetricsMiddleware:
    """Request count and latency by route template (not raw path: user ids would explode the labels);
    each request's Qdrant calls share one time budget (:func:`service.stores.qdrant.request_budget`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            with request_budget():  # the Qdrant calls of one request share one timeout
                await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            labels: dict[str, Any] = {
                "route": template,
                "method": scope.get("method", ""),
                "status": str(status),
            }
            REQUESTS.labels(**labels).inc()
            REQUEST_LATENCY.labels(**labels).observe(time.perf_counter() - started)


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    if not logging.getLogger().handlers:
        # a worker process uvicorn spawned (``--workers`` > 1) starts with no logging configured: without
        # this its records lose their fields (the reason a bundle failed to load) and every info line
        configure_logging()
    settings = settings or ServiceSettings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt = build_runtime(settings)
        app.state.runtime = rt
        if settings.auth == "off":
            log.warning("PROFILEREC_AUTH=off: anyone who reaches the port may write items and feedback")
        elif settings.api_key is None:
            log.warning("no PROFILEREC_API_KEY: writes and explain=true answer 401 until one is set")
        await asyncio.to_thread(rt.feedback.load)  # every answer excludes what the log says was seen
        await rt.refresh_bundle()
        if rt.holder.current is None:
            log.warning("starting without a bundle", extra={"reason": rt.holder.error})
        watcher: asyncio.Task[None] | None = None
        if settings.reload_interval_s > 0:
            watcher = asyncio.create_task(rt.watch_bundle())
        elif rt.holder.current is None:  # no watcher: retry until the bundle (and its stores) load
            watcher = asyncio.create_task(rt.load_until_served())
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            await rt.close()

    app = FastAPI(
        title="profilerec",
        version="0.1.0",
        summary="Top-N recommendations from LLM-written profiles fused with collaborative models (ProEx)",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    # limits first (outermost but metrics): nothing reads a body or a URL above them
    app.add_middleware(
        RequestLimitsMiddleware, max_body_bytes=settings.max_body_bytes, max_url_chars=settings.max_url_chars
    )
    app.add_middleware(MetricsMiddleware)
    app.include_router(api)
    app.include_router(admin)
    app.include_router(ops)
    install_live_openapi(app, settings)
    return app
