"""Shared fixtures. Real data come from the data root (``PROFILEREC_DATA_DIR`` or ``../shared/data``);
a missing data root is an error, not a skip."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.data.registry import data_root


@pytest.fixture(scope="session")
def data_dir() -> Path:
    root = data_root()
    if not (root / "movielens-100k" / "u.data").exists():
        raise RuntimeError(f"datasets not found under {root}: set PROFILEREC_DATA_DIR")
    return root


@pytest.fixture(scope="session")
def movielens(data_dir: Path):
    from training.data import load_movielens_100k

    return load_movielens_100k(data_dir / "movielens-100k")


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real redis-server on a free loopback port for the whole session (no persistence).

    Yields an object with ``url``, ``port`` and ``stop()``/``start()`` for outage tests."""
    import shutil
    import subprocess
    import time

    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "redis-server is not installed: apt-get install -y redis-server (make test does it)"
        )

    class RedisProcess:
        def __init__(self) -> None:
            self.port = _free_port()
            self.url = f"redis://127.0.0.1:{self.port}/0"
            self.dir = tmp_path_factory.mktemp("redis")
            self.proc: subprocess.Popen[bytes] | None = None

        def start(self) -> None:
            self.proc = subprocess.Popen(
                [
                    binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.dir),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            import redis

            client = redis.Redis.from_url(self.url)
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis.exceptions.ConnectionError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("redis-server did not start") from None
                    time.sleep(0.05)
            client.close()

        def stop(self) -> None:
            if self.proc is not None:
                self.proc.terminate()
                self.proc.wait(timeout=10)
                self.proc = None

    server = RedisProcess()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def free_port() -> int:
    return _free_port()
