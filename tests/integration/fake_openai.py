"""A fake OpenAI-compatible server: a real HTTP server on a free loopback port (stdlib ``http.server``
in a thread) answering ``POST /v1/chat/completions`` and ``POST /v1/embeddings`` with the real OpenAI
JSON shapes. Scriptable: queue per-path responses (a status with an error body, a Retry-After header,
a malformed body) that are served before the normal answers."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

DIM = 16


@dataclass
class Scripted:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class FakeOpenAIServer:
    def __init__(self, api_key: str | None = "test-key") -> None:
        self.api_key = api_key
        self.scripts: dict[str, deque[Scripted]] = {}
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.auth_headers: list[str | None] = []
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.delay_s = 0.0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                try:
                    payload = json.loads(raw or b"{}")
                except ValueError:
                    payload = {}
                with server.lock:
                    server.requests.append((self.path, payload))
                    server.auth_headers.append(self.headers.get("Authorization"))
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    scripted = server.scripts.get(self.path)
                    item = scripted.popleft() if scripted else None
                try:
                    if server.delay_s:
                        threading.Event().wait(server.delay_s)
                    if item is not None:
                        self._send(item.status, item.body, item.headers)
                        return
                    if server.api_key and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                        self._json(
                            401,
                            {
                                "error": {
                                    "message": "Incorrect API key provided",
                                    "type": "invalid_request_error",
                                }
                            },
                        )
                        return
                    if self.path == "/v1/chat/completions":
                        self._json(200, server.chat(payload))
                    elif self.path == "/v1/embeddings":
                        self._json(200, server.embeddings(payload))
                    else:
                        self._json(404, {"error": {"message": f"no route {self.path}"}})
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def _json(self, status: int, body: Any) -> None:
                self._send(status, json.dumps(body).encode(), {"Content-Type": "application/json"})

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    # ------------------------------------------------------------------ answers
    @staticmethod
    def chat(payload: dict[str, Any]) -> dict[str, Any]:
        last = payload["messages"][-1]["content"]
        words = [w for w in last.replace("\n", " ").split() if w.isalpha() and len(w) > 3][:12]
        text = (
            f"This viewer enjoys {' '.join(words[:4]) or 'stories'} and thoughtful drama. "
            f"They often pick {' '.join(words[4:8]) or 'classic films'} with memorable characters, "
            f"seed {payload.get('seed')}."
        )
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": payload.get("model", "fake"),
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            ],
            "usage": {
                "prompt_tokens": len(last.split()),
                "completion_tokens": len(text.split()),
                "total_tokens": 0,
            },
        }

    @staticmethod
    def vector(text: str) -> list[float]:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
        return np.random.default_rng(seed).standard_normal(DIM).round(6).tolist()

    def embeddings(self, payload: dict[str, Any]) -> dict[str, Any]:
        inputs = payload["input"]
        inputs = [inputs] if isinstance(inputs, str) else inputs
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": self.vector(t)} for i, t in enumerate(inputs)
            ],
            "model": payload.get("model", "fake-embed"),
            "usage": {"prompt_tokens": 0, "total_tokens": 0},
        }

    # ------------------------------------------------------------------ scripting
    def script(self, path: str, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body if body is not None else {}).encode()
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        with self.lock:
            self.scripts.setdefault(path, deque()).append(Scripted(status, raw, hdrs))

    def count(self, path: str) -> int:
        with self.lock:
            return sum(1 for p, _ in self.requests if p == path)

    def __enter__(self) -> FakeOpenAIServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
