"""HTTP routes: thin wrappers that validate input and call :mod:`service.recommender`."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.status import HTTP_204_NO_CONTENT

from service import recommender
from service.errors import UnauthorizedError
from service.metrics import render_latest
from service.responses import OrjsonResponse
from service.runtime import Runtime
from service.schemas import (
    ColdStartRequest,
    FeedbackEvent,
    FeedbackResponse,
    ItemUpsertRequest,
    ItemUpsertResponse,
    ProfilesUpsertRequest,
    ProfilesUpsertResponse,
    ReadinessResponse,
    RecommendationResponse,
)

EntityPath = Annotated[str, Path(min_length=1, max_length=128)]


# Dependencies are coroutines: a plain `def` dependency runs in the threadpool, a thread hop per request.
async def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


RuntimeDep = Annotated[Runtime, Depends(runtime)]


async def require_api_key(request: Request, rt: RuntimeDep) -> None:
    expected = rt.settings.api_key
    if expected is not None and request.headers.get(rt.settings.api_key_header) != expected:
        raise UnauthorizedError(f"missing or wrong {rt.settings.api_key_header} header")


LOOPBACK = {"127.0.0.1", "::1", "localhost", "testclient"}


async def require_admin(request: Request, rt: RuntimeDep) -> None:
    expected = rt.settings.admin_api_key
    if expected is None:
        host = request.client.host if request.client else ""
        if host not in LOOPBACK:
            raise UnauthorizedError(
                "admin routes answer loopback clients only unless PROFILEREC_ADMIN_API_KEY is set"
            )
    elif request.headers.get("X-Admin-Key") != expected:
        raise UnauthorizedError("missing or wrong X-Admin-Key header")


api = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], tags=["recommendations"])
admin = APIRouter(prefix="/v1/admin", dependencies=[Depends(require_admin)], tags=["admin"])
ops = APIRouter(tags=["operations"])


@api.get(
    "/users/{user_id}/recommendations", response_model=RecommendationResponse, response_class=OrjsonResponse
)
async def user_recommendations(
    rt: RuntimeDep,
    user_id: EntityPath,
    n: Annotated[int, Query(ge=1, le=1000, description="how many items (bounded by PROFILEREC_MAX_N)")] = 20,
    category: Annotated[
        list[str] | None, Query(max_length=50, description="keep only these categories (repeatable)")
    ] = None,
    exclude: Annotated[
        list[str] | None, Query(max_length=1000, description="item ids to leave out (repeatable)")
    ] = None,
    explain: Annotated[
        bool, Query(description="add the user's profile texts and item profile snippets")
    ] = False,
) -> OrjsonResponse:
    answer = await recommender.recommend_for_user(rt, user_id, n, category or [], exclude or [], explain)
    return OrjsonResponse(answer)


@api.post("/recommendations", response_model=RecommendationResponse, response_class=OrjsonResponse)
async def cold_start_recommendations(rt: RuntimeDep, body: ColdStartRequest) -> OrjsonResponse:
    return OrjsonResponse(await recommender.recommend_cold_start(rt, body))


@api.put("/items/{item_id}", response_model=ItemUpsertResponse)
async def put_item(
    rt: RuntimeDep, item_id: EntityPath, body: ItemUpsertRequest, response: Response
) -> ItemUpsertResponse:
    result = await recommender.upsert_item(rt, item_id, body)
    response.status_code = 201 if result.created else 200
    return result


@api.delete(
    "/items/{item_id}", status_code=HTTP_204_NO_CONTENT, responses={404: {"description": "no such item"}}
)
async def delete_item(rt: RuntimeDep, item_id: EntityPath) -> Response:
    """Remove an item from every later answer (logged in the catalogue log)."""
    await recommender.delete_item(rt, item_id)
    return Response(status_code=HTTP_204_NO_CONTENT)


@api.post("/feedback", response_model=FeedbackResponse)
async def post_feedback(
    rt: RuntimeDep, body: Annotated[list[FeedbackEvent], Body(min_length=1, max_length=10_000)]
) -> FeedbackResponse:
    return FeedbackResponse(accepted=await recommender.record_feedback(rt, body))


@admin.post("/profiles", response_model=ProfilesUpsertResponse)
async def upsert_profiles(rt: RuntimeDep, body: ProfilesUpsertRequest) -> ProfilesUpsertResponse:
    """Refreshed profiles into the live profiles collection, and their cache keys dropped."""
    return await recommender.upsert_profiles(rt, body)


@admin.post("/reload")
async def reload_bundle(rt: RuntimeDep) -> dict[str, object]:
    """Look at the bundle pointer now instead of at the next poll."""
    switched = await rt.refresh_bundle()
    live = rt.holder.current
    return {
        "switched": switched,
        "model_version": live.version if live else None,
        "error": rt.holder.error,
    }


@ops.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@ops.get("/readyz", response_model=ReadinessResponse, responses={503: {"model": ReadinessResponse}})
async def readyz(rt: RuntimeDep) -> JSONResponse:
    checks: dict[str, str] = {}
    bundle = rt.holder.current
    checks["bundle"] = f"ok ({bundle.version})" if bundle else f"missing: {rt.holder.error or 'not loaded'}"
    qdrant = await rt.ping_store()
    checks["store"] = (
        f"ok ({bundle.items.engine if bundle else rt.engine.name})" if qdrant is None else qdrant
    )
    redis = await rt.cache.ping()
    checks["redis"] = "ok" if redis is None else redis
    status: Literal["ready", "degraded", "not_ready"]
    if bundle is None or qdrant is not None or (redis is not None and rt.settings.ready_requires_redis):
        status, code = "not_ready", 503
    elif redis is not None:
        status, code = "degraded", 200  # Redis is a cache: serve from Qdrant
    else:
        status, code = "ready", 200
    body = ReadinessResponse(status=status, checks=checks, model_version=bundle.version if bundle else None)
    return JSONResponse(body.model_dump(), status_code=code)


@ops.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    payload, content_type = render_latest()
    return Response(payload, media_type=content_type)
