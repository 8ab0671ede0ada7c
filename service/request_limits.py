"""Limits enforced before anything parses a request: URL length and body size (pure ASGI).

The body limit counts the bytes of the ``http.request`` messages as the application reads them, so a
chunked body (no ``Content-Length``) is cut off at the limit just like a declared one, and the JSON
parser never sees more than ``max_body_bytes``. A declared ``Content-Length`` above the limit is
refused before the first byte is read. Both answer 413 with the service's JSON error body; a URL
(path + query string) above ``max_url_chars`` answers 414.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import HTTP_CODES, error_body
from service.metrics import ERRORS


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when the body passes the limit (FastAPI re-raises HTTP exceptions from
    body reading, so its handler answers 413; the middleware answers itself if nothing else did)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")


async def send_error(send: Send, status: int, message: str) -> None:
    code = HTTP_CODES.get(status, "http_error")
    ERRORS.labels(type=code).inc()
    payload = json.dumps(error_body(code, message)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    if status == 413:
        headers.append((b"connection", b"close"))  # the rest of the body is not read
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class RequestLimitsMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int, max_url_chars: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_url_chars = max_url_chars

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        url_chars = len(scope.get("raw_path") or scope["path"].encode()) + len(scope.get("query_string", b""))
        if url_chars > self.max_url_chars:
            await send_error(send, 414, f"the URL is longer than {self.max_url_chars} characters")
            return
        limit = self.max_body_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await send_error(send, 400, "Content-Length is not a number")
                    return
                if declared > limit:
                    await send_error(send, 413, f"the request body is larger than {limit} bytes")
                    return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as exc:
            if started:
                raise
            await send_error(send, 413, str(exc.detail))
