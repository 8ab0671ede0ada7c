"""A stand-in for a Qdrant server that can fail and come back, for the resilience parts (no Qdrant
server binary is installed here).

:class:`FakeQdrant` listens on a loopback port and answers the part of Qdrant's REST API the service
and its jobs use (collections: list, exists, create, payload index; points: upsert, retrieve, query,
delete, scroll; ``GET /`` for the client's version check) from qdrant-client's local mode on a
storage folder (``storage``; a copy of a deployment's embedded Qdrant). Without ``storage`` it answers
only ``GET /collections/{name}/exists`` (``true``), which is all the service asks at startup to open a
bundle's items collection.

Its state can be changed while the service uses it:

- :meth:`hang`: every request from then on is held open and never answered (a hung server; the
  connection is accepted);
- :meth:`go_down`: the listener and every connection are closed: the port refuses, as a dead
  server's would;
- :meth:`come_back`: it listens again on the same port (after :meth:`go_down`) and answers again
  (after :meth:`hang`, the held connections are closed, as a restarted server's would be).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, TypeAdapter
from qdrant_client import QdrantClient
from qdrant_client.http import models

SERVER_VERSION = version("qdrant-client")  # what GET / reports (the client checks compatibility)
_DONE = models.UpdateResult(operation_id=0, status=models.UpdateStatus.COMPLETED)


class _NotFoundError(Exception):
    pass


class _Backend:
    """Qdrant REST requests answered by qdrant-client's local mode (one request at a time)."""

    def __init__(self, storage: Path) -> None:
        # what the local mode says about a server's features it does not have (indexes, HNSW)
        warnings.filterwarnings("ignore", "Payload indexes have no effect in the local Qdrant")
        warnings.filterwarnings("ignore", "Local mode performs exact")
        self.client = QdrantClient(path=str(storage))
        self.lock = threading.Lock()

    def close(self) -> None:
        with self.lock:
            self.client.close()

    def answer(self, method: str, target: str, body: Any) -> Any:
        url = urlsplit(target)
        parts = [p for p in url.path.split("/") if p]
        with self.lock:
            if parts == ["collections"] and method == "GET":
                return self.client.get_collections()
            if len(parts) < 2 or parts[0] != "collections":
                raise _NotFoundError(f"no route {method} {url.path}")
            name, route = parts[1], (method, *parts[2:])
            if route == ("GET", "exists"):
                return {"exists": self.client.collection_exists(name)}
            if route != ("PUT",) and not self.client.collection_exists(name):
                raise _NotFoundError(f"Collection `{name}` doesn't exist!")
            handler = self._routes().get(route)
            if handler is None:
                raise _NotFoundError(f"no route {method} {url.path}")
            return handler(name, body or {})

    def _routes(self) -> dict[tuple[str, ...], Any]:
        return {
            ("PUT",): self._create,
            ("GET",): lambda name, _: self.client.get_collection(name),
            ("PUT", "index"): self._index,
            ("PUT", "points"): self._upsert,
            ("POST", "points"): self._retrieve,
            ("POST", "points", "query"): self._query,
            ("POST", "points", "delete"): self._delete,
            ("POST", "points", "scroll"): self._scroll,
        }

    def _create(self, name: str, body: Any) -> Any:
        create = models.CreateCollection.model_validate(body)
        return self.client.create_collection(
            name, vectors_config=create.vectors or {}, sparse_vectors_config=create.sparse_vectors
        )

    def _index(self, name: str, body: Any) -> Any:
        index = models.CreateFieldIndex.model_validate(body)
        self.client.create_payload_index(name, field_name=index.field_name, field_schema=index.field_schema)
        return _DONE

    def _upsert(self, name: str, body: Any) -> Any:
        operation = TypeAdapter(models.PointInsertOperations).validate_python(body)
        if isinstance(operation, models.PointsBatch):
            self.client.upsert(name, points=operation.batch)
        else:
            self.client.upsert(name, points=operation.points)
        return _DONE

    def _retrieve(self, name: str, body: Any) -> Any:
        request = models.PointRequest.model_validate(body)
        return self.client.retrieve(
            name,
            ids=request.ids,
            with_payload=_given(request.with_payload, True),
            with_vectors=_given(request.with_vector, False),
        )

    def _query(self, name: str, body: Any) -> Any:
        q = models.QueryRequest.model_validate(body)
        return self.client.query_points(
            name,
            query=q.query,
            using=q.using,
            query_filter=q.filter,
            search_params=q.params,
            limit=q.limit or 10,
            offset=q.offset,
            with_payload=_given(q.with_payload, False),
            with_vectors=_given(q.with_vector, False),
            score_threshold=q.score_threshold,
        )

    def _delete(self, name: str, body: Any) -> Any:
        self.client.delete(name, points_selector=TypeAdapter(models.PointsSelector).validate_python(body))
        return _DONE

    def _scroll(self, name: str, body: Any) -> Any:
        s = models.ScrollRequest.model_validate(body)
        points, next_offset = self.client.scroll(
            name,
            scroll_filter=s.filter,
            limit=s.limit or 10,
            offset=s.offset,
            with_payload=_given(s.with_payload, True),
            with_vectors=_given(s.with_vector, False),
        )
        return {"points": points, "next_page_offset": next_offset}


def _given(value: Any, default: Any) -> Any:
    return default if value is None else value


def _dump(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return value


def _response(status: int, payload: Any) -> bytes:
    body = json.dumps(payload).encode()
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(status, "Error")
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode() + body


class FakeQdrant:
    def __init__(self, storage: Path | None = None) -> None:
        self.backend = _Backend(storage) if storage is not None else None
        self.port = 0
        self.sock = self._listen()
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections: list[socket.socket] = []
        self.held = 0  # requests held open without an answer
        self.answered = 0
        self.mode = "serve"  # serve | hang | down
        self._lock = threading.Lock()

    def _listen(self) -> socket.socket:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(512)
        self.port = int(sock.getsockname()[1])
        return sock

    def __enter__(self) -> FakeQdrant:
        self._start_accepting()
        return self

    def __exit__(self, *exc: object) -> None:
        self.go_down()
        if self.backend is not None:
            self.backend.close()

    def _start_accepting(self) -> None:
        threading.Thread(target=self._accept, args=(self.sock,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buffer = b""
        with contextlib.suppress(OSError):
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                method, target = lines[0].split(" ")[:2]
                headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
                length = int(headers.get("content-length", "0") or 0)
                while len(buffer) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                raw, buffer = buffer[:length], buffer[length:]
                answer = self._answer(method, target, raw) if self.mode == "serve" else None
                if answer is None:
                    with self._lock:
                        self.held += 1
                    return  # held: the connection stays open and is never answered
                conn.sendall(answer)
                with self._lock:
                    self.answered += 1

    def _answer(self, method: str, target: str, raw: bytes) -> bytes | None:
        """The response to send, or None to hold the request."""
        path = urlsplit(target).path
        if method == "GET" and path in ("", "/"):
            return _response(200, {"title": "qdrant - vector search engine", "version": SERVER_VERSION})
        if self.backend is None:
            if method == "GET" and path.endswith("/exists"):
                return _response(200, {"result": {"exists": True}, "status": "ok", "time": 0.0})
            return None  # only the startup check is answered without a storage
        try:
            result = self.backend.answer(method, target, json.loads(raw) if raw else None)
        except _NotFoundError as exc:
            return _response(404, {"status": {"error": f"Not found: {exc}"}, "time": 0.0})
        except (ValueError, TypeError, KeyError) as exc:
            return _response(400, {"status": {"error": f"Bad request: {exc}"}, "time": 0.0})
        return _response(200, {"result": _dump(result), "status": "ok", "time": 0.0})

    def _close_connections(self) -> None:
        with self._lock:
            for conn in self.connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    conn.close()
            self.connections.clear()

    def hang(self) -> None:
        """Hold every request from now on (connections are still accepted)."""
        self.mode = "hang"

    def go_down(self) -> None:
        """Refuse from now on: close the listener and every connection."""
        self.mode = "down"
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._close_connections()

    def come_back(self) -> None:
        """Answer again, on the same port; connections held while hanging are closed."""
        if self.mode == "down":
            self.sock = self._listen()
            self._start_accepting()
        else:
            self._close_connections()
        self.mode = "serve"
