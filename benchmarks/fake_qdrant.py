"""A stand-in for a Qdrant server that has gone bad after the service started, for the resilience
parts (no Qdrant server binary is installed here).

It answers only ``GET /collections/{name}/exists`` (``true``), which is all the service asks at
startup to open a bundle's items collection, so the bundle loads and the service serves; every other
request (searches, retrieves, upserts, the readiness ping) is held open and never answered, as by a
hung server. :meth:`go_down` then closes the listener and every connection: the port refuses, as a
dead server's would."""

from __future__ import annotations

import contextlib
import json
import socket
import threading

_EXISTS = json.dumps({"result": {"exists": True}, "status": "ok", "time": 0.0}).encode()


class FakeQdrant:
    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port = int(self.sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections: list[socket.socket] = []
        self.held = 0  # requests held open without an answer
        self._lock = threading.Lock()

    def __enter__(self) -> FakeQdrant:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.go_down()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
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
                request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
                method, path = request_line.split(" ")[:2]
                if method == "GET" and path.split("?")[0].endswith("/exists"):
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                        + f"content-length: {len(_EXISTS)}\r\n\r\n".encode()
                        + _EXISTS
                    )
                    continue
                with self._lock:
                    self.held += 1
                return  # held: the connection stays open and is never answered

    def go_down(self) -> None:
        """Refuse from now on: close the listener and every connection."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        with self._lock:
            for conn in self.connections:
                with contextlib.suppress(OSError):
                    conn.close()
            self.connections.clear()
