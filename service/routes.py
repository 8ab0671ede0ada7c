"""HTTP routes: thin wrappers that validate input and call :mod:`service.recommender`.

Every route documents every status it answers and the error body (:class:`service.errors.ErrorResponse`)
in the OpenAPI document; the limits there are :mod:`service.limits`, the ones enforced.

Keys (README, "Security"): writes (``PUT``/``DELETE /v1/items``, ``POST /v1/feedback``) and profile
texts (``explain=true``) need ``PROFILEREC_API_KEY`` unless ``PROFILEREC_AUTH=off``; reads need it with
``PROFILEREC_AUTH_READS=true``; ``/v1/admin/*`` always needs ``PROFILEREC_ADMIN_API_KEY`` (unset: 401).
No client address or forwarded header is trusted. Keys are compared in constant time.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response, Security
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from pydantic import SecretStr, StringConstraints
from starlette.status import HTTP_204_NO_CONTENT

from service import online_store, recommender
from service.errors import ErrorResponse, InvalidInputError, UnauthorizedError
from service.limits import (
    COMMA_LIST,
    MAX_CATEGORIES,
    MAX_CATEGORY_CHARS,
    MAX_EXCLUDE,
    MAX_FEEDBACK_BATCH,
    MAX_ID_CHARS,
    MAX_N,
    NO_CONTROL,
)
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

EntityPath = Annotated[str, Path(min_length=1, max_length=MAX_ID_CHARS, pattern=NO_CONTROL)]
QueryValue = Annotated[str, StringConstraints(pattern=COMMA_LIST)]  # one or more comma-separated values

_DESCRIPTIONS = {
    400: "the request conflicts with the live model (e.g. text for a model without profiles)",
    401: "missing or wrong key (see WWW-Authenticate)",
    404: "no such item",
    413: "the request body is larger than PROFILEREC_MAX_BODY_BYTES",
    414: "the URL is longer than PROFILEREC_MAX_URL_CHARS",
    422: "the request breaks the schema or a limit: error.details.problems names the fields",
    503: "no model bundle loaded, or the retrieval store unreachable (Retry-After)",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses (every route can also answer 413 and 414)."""
    wanted = sorted({*codes, 413, 414, 422})
    return {code: {"model": ErrorResponse, "description": _DESCRIPTIONS[code]} for code in wanted}


# Dependencies are coroutines: a plain `def` dependency runs in the threadpool, a thread hop per request.
async def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


RuntimeDep = Annotated[Runtime, Depends(runtime)]

# For the OpenAPI document (security schemes); the checks below read the configured header.
api_key_scheme = APIKeyHeader(name="X-API-Key", scheme_name="ApiKey", auto_error=False)
admin_key_scheme = APIKeyHeader(name="X-Admin-Key", scheme_name="AdminKey", auto_error=False)


def _check_key(provided: str | None, expected: SecretStr, header: str) -> None:
    if provided is None or not secrets.compare_digest(
        provided.encode(), expected.get_secret_value().encode()
    ):
        raise UnauthorizedError(f"missing or wrong {header} header", header)


def require_client_key(request: Request, rt: Runtime) -> None:
    """The API key check of writes and profile texts (unless the operator turned auth off)."""
    settings = rt.settings
    if settings.auth == "off":
        return
    if settings.api_key is None:
        raise UnauthorizedError(
            "this route needs an API key and none is configured: set PROFILEREC_API_KEY "
            "(or PROFILEREC_AUTH=off to allow unauthenticated writes)",
            settings.api_key_header,
        )
    _check_key(request.headers.get(settings.api_key_header), settings.api_key, settings.api_key_header)


async def writer(request: Request, rt: RuntimeDep) -> None:
    require_client_key(request, rt)


async def reader(request: Request, rt: RuntimeDep) -> None:
    if rt.settings.auth_reads:
        require_client_key(request, rt)


async def require_admin(request: Request, rt: RuntimeDep) -> None:
    expected = rt.settings.admin_api_key
    if expected is None:
        raise UnauthorizedError(
            "admin routes are disabled: set PROFILEREC_ADMIN_API_KEY and send it in X-Admin-Key",
            "X-Admin-Key",
        )
    _check_key(request.headers.get("X-Admin-Key"), expected, "X-Admin-Key")


Reader = [Depends(reader), Security(api_key_scheme)]
Writer = [Depends(writer), Security(api_key_scheme)]

api = APIRouter(prefix="/v1", tags=["recommendations"])
admin = APIRouter(
    prefix="/v1/admin", dependencies=[Depends(require_admin), Security(admin_key_scheme)], tags=["admin"]
)
ops = APIRouter(tags=["operations"])


def split_values(values: list[str] | None, field: str, max_chars: int, max_count: int) -> list[str]:
    """Repeated and comma-separated query values alike (``a&x=b`` and ``x=a,b``), each validated."""
    out: list[str] = []
    for raw in values or ():
        for part in raw.split(","):
            value = part.strip()
            if not value:
                raise InvalidInputError(field, f"{field} has an empty value")
            if len(value) > max_chars:
                raise InvalidInputError(
                    field, f"a {field} value is longer than {max_chars} characters", limit=max_chars
                )
            out.append(value)
    if len(out) > max_count:
        raise InvalidInputError(field, f"at most {max_count} {field} values", limit=max_count)
    return list(dict.fromkeys(out))


@api.get(
    "/users/{user_id}/recommendations",
    response_model=RecommendationResponse,
    response_class=OrjsonResponse,
    dependencies=Reader,
    responses=errors(401, 503),
)
async def user_recommendations(
    request: Request,
    rt: RuntimeDep,
    user_id: EntityPath,
    n: Annotated[
        int, Query(ge=1, le=MAX_N, description=f"how many items (at most {MAX_N}, or PROFILEREC_MAX_N)")
    ] = 20,
    category: Annotated[
        list[QueryValue] | None,
        Query(
            description=f"keep only items in one of these categories: repeat the parameter or separate "
            f"names with commas (at most {MAX_CATEGORIES}); an unknown category is 422 listing the valid "
            "ones"
        ),
    ] = None,
    exclude: Annotated[
        list[QueryValue] | None,
        Query(
            description=f"item ids to leave out: repeat the parameter or separate ids with commas (at "
            f"most {MAX_EXCLUDE})"
        ),
    ] = None,
    explain: Annotated[
        bool,
        Query(description="add the user's profile texts and item profile snippets (needs the API key)"),
    ] = False,
) -> OrjsonResponse:
    if explain:
        require_client_key(request, rt)
    categories = split_values(category, "category", MAX_CATEGORY_CHARS, MAX_CATEGORIES)
    excluded = split_values(exclude, "exclude", MAX_ID_CHARS, MAX_EXCLUDE)
    answer = await recommender.recommend_for_user(rt, user_id, n, categories, excluded, explain)
    return OrjsonResponse(answer)


@api.post(
    "/recommendations",
    response_model=RecommendationResponse,
    response_class=OrjsonResponse,
    dependencies=Reader,
    responses=errors(400, 401, 503),
)
async def cold_start_recommendations(rt: RuntimeDep, body: ColdStartRequest) -> OrjsonResponse:
    return OrjsonResponse(await recommender.recommend_cold_start(rt, body))


@api.put(
    "/items/{item_id}",
    response_model=ItemUpsertResponse,
    dependencies=Writer,
    responses={201: {"model": ItemUpsertResponse, "description": "a new item"}, **errors(401, 503)},
)
async def put_item(
    rt: RuntimeDep, item_id: EntityPath, body: ItemUpsertRequest, response: Response
) -> ItemUpsertResponse:
    """Add an item (201, embedded from its text) or change an item's metadata (200)."""
    result = await online_store.upsert_item(rt, item_id, body)
    response.status_code = 201 if result.created else 200
    return result


@api.delete(
    "/items/{item_id}",
    status_code=HTTP_204_NO_CONTENT,
    dependencies=Writer,
    responses=errors(401, 404, 503),
)
async def delete_item(rt: RuntimeDep, item_id: EntityPath) -> Response:
    """Remove an item from every later answer (logged in the catalogue log)."""
    await online_store.delete_item(rt, item_id)
    return Response(status_code=HTTP_204_NO_CONTENT)


@api.post("/feedback", response_model=FeedbackResponse, dependencies=Writer, responses=errors(401, 503))
async def post_feedback(
    rt: RuntimeDep,
    body: Annotated[
        list[FeedbackEvent],
        Body(
            min_length=1,
            max_length=MAX_FEEDBACK_BATCH,
            description=f"1 to {MAX_FEEDBACK_BATCH} events (or PROFILEREC_MAX_FEEDBACK_BATCH)",
        ),
    ],
) -> FeedbackResponse:
    return FeedbackResponse(accepted=await recommender.record_feedback(rt, body))


@admin.post("/profiles", response_model=ProfilesUpsertResponse, responses=errors(400, 401, 503))
async def upsert_profiles(rt: RuntimeDep, body: ProfilesUpsertRequest) -> ProfilesUpsertResponse:
    """Refreshed profiles into the live profiles collection, and their cache keys dropped."""
    return await online_store.upsert_profiles(rt, body)


@admin.post("/reload", responses=errors(401))
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


@ops.get(
    "/readyz",
    response_model=ReadinessResponse,
    responses={503: {"model": ReadinessResponse, "description": "not ready: a check failed"}},
)
async def readyz(rt: RuntimeDep) -> JSONResponse:
    """Check names and states only (``ok``, ``missing``, ``refused``, ``waiting``, ``unreachable``,
    ``disabled``); the reasons (paths, exception texts) are in the service log. A bundle ``waiting`` is
    one whose store was unreachable when it was opened (it is opened again, without a restart)."""
    checks: dict[str, str] = {}
    bundle = rt.holder.current
    checks["bundle"] = "ok" if bundle is not None else rt.holder.state
    if bundle is not None and rt.holder.state in ("refused", "waiting"):
        checks["promoted_bundle"] = rt.holder.state  # a newer bundle did not open; the old one serves
    store = await rt.ping_store()
    checks["store"] = "ok" if store is None else "unreachable"
    redis = await rt.cache.ping()
    disabled = rt.cache.client is None
    checks["redis"] = "ok" if redis is None else "disabled" if disabled else "unreachable"
    if store is not None or (redis is not None and not disabled):
        rt.log_unready(store, redis)
    status: Literal["ready", "degraded", "not_ready"]
    if bundle is None or store is not None or (redis is not None and rt.settings.ready_requires_redis):
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
