"""Domain exceptions, mapped to HTTP in one place (:func:`install_error_handlers`).

Client mistakes are 4xx with a message; a dependency that is down is 503 with the reason; anything
unexpected is a 500 with a request id and no traceback in the body (the traceback goes to the log).
One status per class of error: a request that does not meet the documented schema or limits is 422
(``validation_error``) wherever the check happens; every error body is ``{"error": {...}}``
(:class:`ErrorResponse`, the schema the OpenAPI document states for every error status).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.metrics import ERRORS

log = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable: validation_error, unauthorized, not_found, ...")
    message: str
    details: dict[str, Any] | None = Field(
        None, description="e.g. problems: [{field, message}] for validation_error, valid values, limits"
    )


class ErrorResponse(BaseModel):
    """The body of every error answer."""

    error: ErrorDetail


class ServiceError(Exception):
    """Base of every error the service raises on purpose."""

    status_code = 500
    code = "internal_error"
    headers: dict[str, str] | None = None

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    @property
    def log_reason(self) -> str:
        """What the service log says about the error (may say more than the answer)."""
        return self.message


class InvalidInputError(ServiceError):
    """The request breaks a documented rule checked after parsing (a limit the settings lowered, an
    unknown category or feedback type): the same 422 as a schema violation."""

    status_code = 422
    code = "validation_error"

    def __init__(self, field: str, message: str, **details: object) -> None:
        super().__init__(message, problems=[{"field": field, "message": message}], **details)


class BadRequestError(ServiceError):
    status_code = 400
    code = "bad_request"


class NotFoundError(ServiceError):
    status_code = 404
    code = "not_found"


class UnknownItemsError(ServiceError):
    status_code = 422
    code = "unknown_items"


class UnauthorizedError(ServiceError):
    status_code = 401
    code = "unauthorized"

    def __init__(self, message: str, header: str = "X-API-Key") -> None:
        super().__init__(message)
        self.headers = {"WWW-Authenticate": f'ApiKey header="{header}"'}


class DependencyUnavailableError(ServiceError):
    """Qdrant (or another required dependency) cannot be reached: 503 naming the dependency. The
    ``reason`` (its address, the exception text) goes to the service log, not to the client."""

    status_code = 503
    code = "dependency_unavailable"

    def __init__(self, dependency: str, reason: str) -> None:
        super().__init__(f"{dependency} is unavailable: retry later")
        self.reason = reason
        self.args = (reason,)  # str(exc), as the logs use it, is the full reason

    @property
    def log_reason(self) -> str:
        return self.reason


class NotReadyError(ServiceError):
    status_code = 503
    code = "not_ready"


HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
}


def error_body(code: str, message: str, details: dict[str, object] | None = None) -> dict[str, object]:
    error: dict[str, object] = {"code": code, "message": message}
    if details:
        error["details"] = details
    return {"error": error}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        ERRORS.labels(type=exc.code).inc()
        if exc.status_code >= 500:
            log.warning(
                "request failed",
                extra={"path": request.url.path, "code": exc.code, "reason": exc.log_reason},
            )
        headers = {"Retry-After": "1"} if exc.status_code == 503 else exc.headers
        return JSONResponse(
            error_body(exc.code, exc.message, exc.details), status_code=exc.status_code, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        ERRORS.labels(type="validation_error").inc()
        problems = [
            {"field": ".".join(str(p) for p in err.get("loc", ())), "message": err.get("msg", "")}
            for err in exc.errors()
        ]
        return JSONResponse(
            error_body("validation_error", "the request is not valid", {"problems": problems}),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI could not decode the body (not UTF-8 ...): like bad JSON, 422
            ERRORS.labels(type="validation_error").inc()
            problem = {"field": "body", "message": "the body is not valid UTF-8 JSON"}
            return JSONResponse(
                error_body("validation_error", "the request is not valid", {"problems": [problem]}),
                status_code=422,
            )
        code = HTTP_CODES.get(exc.status_code, "http_error")
        ERRORS.labels(type=code).inc()
        return JSONResponse(
            error_body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        request_id = uuid.uuid4().hex[:12]
        ERRORS.labels(type="internal_error").inc()
        log.exception("unhandled error", extra={"path": request.url.path, "request_id": request_id})
        return JSONResponse(
            error_body("internal_error", f"unexpected error (request id {request_id}); see the service log"),
            status_code=500,
        )
