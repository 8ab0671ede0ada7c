"""The scripts the images run, executed for real: the refresh scheduler (with a stand-in for
``profilerec-jobs``), the jobs healthcheck, the service entrypoint and the service healthcheck."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

DOCKER = Path(__file__).resolve().parents[2] / "docker"
REFRESH_LOOP = DOCKER / "jobs" / "refresh-loop.sh"
JOBS_HEALTHCHECK = DOCKER / "jobs" / "healthcheck.sh"
SERVICE_ENTRYPOINT = DOCKER / "service" / "entrypoint.sh"
SERVICE_HEALTHCHECK = DOCKER / "service" / "healthcheck.py"

FAKE_JOBS = """#!/bin/sh
# stand-in for profilerec-jobs: records its arguments, sleeps FAKE_SLEEP s, exits FAKE_EXIT
echo "$@" >> "$FAKE_CALLS"
sleep "${FAKE_SLEEP:-0}"
exit "${FAKE_EXIT:-0}"
"""


class Loop:
    """profilerec-refresh-loop in the background, with its stderr in a file."""

    def __init__(self, tmp: Path, args: list[str], **env: str) -> None:
        bin_dir = tmp / "bin"
        bin_dir.mkdir(exist_ok=True)
        fake = bin_dir / "profilerec-jobs"
        fake.write_text(FAKE_JOBS)
        fake.chmod(0o755)
        self.calls = tmp / "calls"
        self.heartbeat = tmp / "heartbeat"
        self.log = tmp / "loop.log"
        environment = {
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "FAKE_CALLS": str(self.calls),
            "PROFILEREC_HEARTBEAT_FILE": str(self.heartbeat),
            **env,
        }
        with self.log.open("w") as log:
            self.proc = subprocess.Popen([str(REFRESH_LOOP), *args], env=environment, stderr=log)

    def wait_for(self, text: str, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            content = self.log.read_text()
            if text in content:
                return content
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not logged within {timeout}s:\n{self.log.read_text()}")

    def stop(self) -> int:
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=10)
        assert time.monotonic() - started < 5, "TERM must stop the loop at once"
        return code


@pytest.fixture
def loops(tmp_path: Path) -> Iterator[list[Loop]]:
    started: list[Loop] = []
    yield started
    for loop in started:
        if loop.proc.poll() is None:
            loop.proc.kill()
            loop.proc.wait()


def test_refresh_loop_runs_at_start_forwards_arguments_and_stops_on_term(tmp_path, loops) -> None:
    loop = Loop(tmp_path, ["--dataset", "movielens-100k"], PROFILEREC_REFRESH_ON_START="1")
    loops.append(loop)
    log = loop.wait_for("refresh succeeded")
    assert "daily refresh at 03:00 UTC" in log
    assert loop.calls.read_text() == "refresh --dataset movielens-100k\n"
    assert loop.heartbeat.exists()
    assert loop.proc.poll() is None, "the loop waits for the next scheduled run"
    assert loop.stop() == 143
    assert '"msg":"stopping"' in loop.log.read_text()


def test_refresh_loop_survives_a_failed_run(tmp_path, loops) -> None:
    loop = Loop(tmp_path, [], PROFILEREC_REFRESH_ON_START="1", FAKE_EXIT="3")
    loops.append(loop)
    loop.wait_for("refresh failed (exit 3)")
    time.sleep(0.2)
    assert loop.proc.poll() is None
    assert loop.stop() == 143


def test_refresh_loop_stops_a_run_past_its_timeout(tmp_path, loops) -> None:
    loop = Loop(
        tmp_path, [], PROFILEREC_REFRESH_ON_START="1", PROFILEREC_REFRESH_TIMEOUT_S="1", FAKE_SLEEP="30"
    )
    loops.append(loop)
    loop.wait_for("refresh timed out after 1 s", timeout=15)
    assert loop.proc.poll() is None
    assert loop.stop() == 143


def test_refresh_loop_term_during_a_run_stops_the_run(tmp_path, loops) -> None:
    loop = Loop(tmp_path, [], PROFILEREC_REFRESH_ON_START="1", FAKE_SLEEP="30")
    loops.append(loop)
    loop.wait_for("refresh starting")
    time.sleep(0.3)
    assert loop.stop() == 143


@pytest.mark.parametrize("bad", [("PROFILEREC_REFRESH_AT", "25:00"), ("PROFILEREC_REFRESH_TIMEOUT_S", "0")])
def test_refresh_loop_refuses_bad_settings(tmp_path, bad: tuple[str, str]) -> None:
    result = subprocess.run(
        [str(REFRESH_LOOP)],
        env={**os.environ, bad[0]: bad[1]},
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert result.returncode == 2
    assert bad[0] in result.stderr


def test_jobs_healthcheck_reads_the_scheduler_heartbeat(tmp_path) -> None:
    heartbeat = tmp_path / "heartbeat"

    def check() -> int:
        env = {**os.environ, "PROFILEREC_HEARTBEAT_FILE": str(heartbeat)}
        return subprocess.run([str(JOBS_HEALTHCHECK)], env=env, capture_output=True, check=False).returncode

    assert check() == 0  # no scheduler in this container (one-shot job)
    heartbeat.touch()
    assert check() == 0
    old = time.time() - 600
    os.utime(heartbeat, (old, old))
    assert check() == 1


def test_service_entrypoint_empties_the_multiprocess_dir_and_execs(tmp_path) -> None:
    multiproc = tmp_path / "prom"
    multiproc.mkdir()
    (multiproc / "counter_123.db").write_bytes(b"stale")
    (multiproc / "sub").mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(multiproc)}
    result = subprocess.run(
        [str(SERVICE_ENTRYPOINT), "sh", "-c", 'ls -A "$PROMETHEUS_MULTIPROC_DIR"; echo "pid $$"'],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.startswith("pid ")  # the directory was empty
    missing = tmp_path / "missing"
    env["PROMETHEUS_MULTIPROC_DIR"] = str(missing)
    subprocess.run([str(SERVICE_ENTRYPOINT), "true"], env=env, check=True)
    assert missing.is_dir()


@pytest.fixture
def http_server() -> Iterator[int]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_service_healthcheck(http_server: int, free_port: int) -> None:
    def check(port: int, *path: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PROFILEREC_PORT": str(port)}
        return subprocess.run(
            [sys.executable, str(SERVICE_HEALTHCHECK), *path],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    assert check(http_server).returncode == 0
    not_ready = check(http_server, "/readyz")
    assert not_ready.returncode == 1 and "HTTP 503" in not_ready.stderr
    assert check(free_port).returncode == 1  # nothing listens
