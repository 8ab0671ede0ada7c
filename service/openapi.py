"""The OpenAPI document of a running service states its live limits, not only the static ones.

The request models carry the documented maxima (:mod:`service.limits`); an operator may lower some
(``PROFILEREC_MAX_N``, ``PROFILEREC_MAX_FEEDBACK_BATCH``) and chooses the feedback types
(``PROFILEREC_FEEDBACK_TYPES``) and which keys it requires (``PROFILEREC_AUTH``,
``PROFILEREC_AUTH_READS``). The document served at ``/openapi.json`` is patched with those, so a client
generated from it sends what this service accepts.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from service.settings import ServiceSettings

READS = {("/v1/users/{user_id}/recommendations", "get"), ("/v1/recommendations", "post")}


def _security(path: str, method: str, settings: ServiceSettings) -> list[dict[str, list[str]]] | None:
    """What the operation needs: the admin key always, the API key for writes (and reads with
    ``auth_reads``; optional on reads otherwise: ``explain=true`` needs it), nothing with auth off."""
    if path.startswith("/v1/admin/"):
        return [{"AdminKey": []}]
    if not path.startswith("/v1/"):
        return None
    if settings.auth == "off":
        return []
    if (path, method) in READS and not settings.auth_reads:
        return [{}, {"ApiKey": []}]
    return [{"ApiKey": []}]


def _patch(spec: dict[str, Any], settings: ServiceSettings) -> dict[str, Any]:
    schemas = spec.get("components", {}).get("schemas", {})
    event_type = schemas.get("FeedbackEvent", {}).get("properties", {}).get("type")
    if event_type is not None:
        event_type["enum"] = sorted(settings.feedback_types)
    cold_n = schemas.get("ColdStartRequest", {}).get("properties", {}).get("n")
    if cold_n is not None:
        cold_n["maximum"] = settings.max_n
    for path, methods in spec.get("paths", {}).items():
        for method, operation in methods.items():
            security = _security(path, method, settings)
            if security is not None:
                operation["security"] = security
            for parameter in operation.get("parameters", ()):
                if parameter["name"] == "n" and parameter["in"] == "query":
                    parameter["schema"]["maximum"] = settings.max_n
            if path == "/v1/feedback":
                body = operation["requestBody"]["content"]["application/json"]["schema"]
                body["maxItems"] = settings.max_feedback_batch
    return spec


def install_live_openapi(app: FastAPI, settings: ServiceSettings) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _patch(FastAPI.openapi(app), settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
