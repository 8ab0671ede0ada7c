"""The main job on the MovieLens-100k demo, every stage real, then the service, then a recommendation.

1. ``profilerec-pipeline bootstrap``: export the text encoder to ONNX; build the profile store
   (deterministic extractive profiles for all 943 users and 1,682 items, and ProEx LLM profiles from
   the embedded SmolLM2 for a documented sample on top: ``--llm-users``/``--llm-items``, 8 each by
   default, so that the demo finishes in minutes; ``--llm-users 943 --llm-items 1682`` is the full
   run); embed them with MiniLM (the exported ONNX encoder, the service's own); train Mult-VAE fused
   with the profiles the ProEx way; export the ONNX towers into a versioned bundle; create the Qdrant
   collections (embedded, ``var/qdrant``); make the bundle live. One line per step with the elapsed
   time; the full report in ``var/run/bootstrap.json``.
2. Start redis-server (if none answers on the configured URL) and the service (uvicorn, two worker
   processes, ``PROFILEREC_WORKERS`` to change; the in-process retrieval store) in the background,
   logging to ``var/logs``.
3. Ask the service for recommendations over HTTP and print the answers (and the curl commands).

The service is secure by default (writes and profile texts need a key): the demo generates an API key
and an admin key for this run, starts the service with them, prints them and uses the API key in its
curl examples (also in ``var/run/api-key``, readable by you only).

Every stage skips what is done, so a re-run is quick. ``python -m scripts.demo --stop`` stops the
background processes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

WORK_DIR = Path(os.environ.get("PROFILEREC_WORK_DIR") or "var")  # the service and the jobs read it too
RUN_DIR = WORK_DIR / "run"
LOG_DIR = WORK_DIR / "logs"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _stop(name: str) -> None:
    pid_file = RUN_DIR / f"{name}.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text())
    if _pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if not _pid_alive(pid):
                break
            time.sleep(0.1)
        print(f"stopped {name} (pid {pid})")
    pid_file.unlink()


def _spawn(name: str, cmd: list[str], env: dict[str, str]) -> int:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    with (LOG_DIR / f"{name}.log").open("ab") as log:
        proc = subprocess.Popen(
            cmd, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    (RUN_DIR / f"{name}.pid").write_text(str(proc.pid))
    return proc.pid


def _get(
    url: str, body: object = None, timeout: float = 10, key: str | None = None
) -> tuple[int, dict[str, object]]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data else {}
    if key:
        headers["X-API-Key"] = key
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _redis_answers(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _ensure_redis(port: int) -> str:
    if _redis_answers(port):
        return "already running"
    binary = shutil.which("redis-server")
    if binary is None:
        return "not installed: the service runs without its cache (apt-get install -y redis-server)"
    _spawn(
        "redis", [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {}
    )
    for _ in range(50):
        if _redis_answers(port):
            return f"started on port {port}"
        time.sleep(0.1)
    return f"failed to start (see {LOG_DIR}/redis.log); the service runs without its cache"


def _show(title: str, curl: str, status: int, body: dict[str, object]) -> None:
    print(f"\n$ {curl}\n# {title}: HTTP {status}")
    items = body.get("items") if isinstance(body, dict) else None
    if isinstance(items, list):
        print(f"# model {body.get('model_version')}, strategy {body.get('strategy')}")
        for rank, item in enumerate(items, start=1):
            genres = ", ".join(item["categories"])
            print(f"  {rank:2d}. {item['title']:<55} score {item['score']:.4f}  [{genres}]")
        profiles = body.get("user_profiles")
        if isinstance(profiles, list) and profiles:
            print("  the user's profiles:")
            for text in profiles:
                print(f"    - {str(text)[:160]}")
    else:
        print(json.dumps(body, indent=2))


def _new_keys() -> tuple[str, str]:
    """This run's API key and admin key (the API key also in var/run/api-key, mode 0600)."""
    api_key, admin_key = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    for name, value in (("api-key", api_key), ("admin-key", admin_key)):
        path = RUN_DIR / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(value + "\n")
    return api_key, admin_key


def _machine() -> str:
    """The CPU and the load: what the timings printed here were measured on."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{model} x{os.cpu_count()} (load {load})"


def _artefacts(args: argparse.Namespace, started: float) -> dict[str, object] | None:
    """The bootstrap pipeline, one line per step with the elapsed time; the full report to a file."""
    from offline_jobs.cli.pipeline import bootstrap, build_parser, prepare
    from rec_contract.logs import configure_logging

    configure_logging()

    def stage(text: str) -> None:
        print(f"      {time.perf_counter() - started:5.0f} s  {text}", flush=True)

    pipeline_args = prepare(
        build_parser().parse_args(
            [
                "bootstrap",
                "--dataset", "movielens-100k",
                "--llm-users", str(args.llm_users),
                "--llm-items", str(args.llm_items),
                "--epochs", str(args.epochs),
            ]
        )
    )  # fmt: skip
    try:
        report = bootstrap(pipeline_args, stage)
    except Exception as exc:  # the pipeline's own message, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return None
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    (RUN_DIR / "bootstrap.json").write_text(json.dumps(report, indent=2, default=str))
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--llm-users", type=int, default=8, help="users given LLM (ProEx) profiles")
    parser.add_argument("--llm-items", type=int, default=8, help="items given LLM (ProEx) profiles")
    parser.add_argument("--epochs", type=int, default=400, help="maximum training epochs")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PROFILEREC_PORT", "8000")))
    parser.add_argument(
        "--redis-port", type=int, default=int(os.environ.get("PROFILEREC_DEMO_REDIS_PORT", "6379"))
    )
    parser.add_argument("--user", default="1", help="MovieLens user id to ask about")
    parser.add_argument("--stop", action="store_true", help="stop the background service and redis-server")
    args = parser.parse_args(argv)
    if args.stop:
        _stop("service")
        _stop("redis")
        return

    started = time.perf_counter()
    _stop("service")  # restarted below on what this run builds
    print(f"[1/3] building the artefacts on {_machine()}")
    print("      (profiles -> embeddings -> training -> ONNX bundle -> Qdrant; each step skipped when done)")
    service_log_level = os.environ.get("PROFILEREC_LOG_LEVEL", "INFO")
    os.environ.setdefault("PROFILEREC_LOG_LEVEL", "WARNING")
    os.environ.setdefault("PROFILEREC_LOG_FORMAT", "text")
    report = _artefacts(args, started)
    if report is None:
        sys.exit(2)
    print(f"      artefacts ready after {time.perf_counter() - started:.0f} s ({RUN_DIR}/bootstrap.json)")

    print("[2/3] starting redis-server and the service")
    print(f"      redis: {_ensure_redis(args.redis_port)}")
    api_key, admin_key = _new_keys()
    env = {
        "PROFILEREC_API_KEY": api_key,  # writes and explain=true need it (secure by default)
        "PROFILEREC_ADMIN_API_KEY": admin_key,
        "PROFILEREC_LOG_LEVEL": service_log_level,  # the service's own log file keeps everything
        "PROFILEREC_LOG_FORMAT": "json",
        "PROFILEREC_REDIS_URL": f"redis://127.0.0.1:{args.redis_port}/0",
        "PROFILEREC_HOST": "127.0.0.1",
        "PROFILEREC_PORT": str(args.port),
        "PROFILEREC_WORKERS": os.environ.get("PROFILEREC_WORKERS", "2"),
    }
    pid = _spawn("service", [sys.executable, "-m", "service"], env)
    base = f"http://127.0.0.1:{args.port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            status, ready = _get(f"{base}/readyz", timeout=2)
        except (urllib.error.URLError, OSError):
            status, ready = 0, {}
        if status == 200:
            break
        if time.monotonic() > deadline or not _pid_alive(pid):
            print(f"the service did not become ready: {ready or 'no answer'} (see {LOG_DIR}/service.log)")
            sys.exit(1)
        time.sleep(0.5)
    print(f"      service pid {pid} on {base}: {ready['status']} {json.dumps(ready['checks'])}")
    print(
        f"      API key (X-API-Key, for writes and explain=true): {api_key}\n"
        f"      admin key (X-Admin-Key): {admin_key}   (both in {RUN_DIR}/, new at every run)"
    )

    print("[3/3] asking for recommendations")
    url = f"{base}/v1/users/{args.user}/recommendations?n=10&explain=true"
    _show(
        f"top-10 for MovieLens user {args.user}, with their profiles (explain=true needs the key)",
        f"curl -s -H 'X-API-Key: {api_key}' '{url}'",
        *_get(url, key=api_key),
    )
    cold = {"liked_items": ["50", "172", "181"], "text": "I love space adventures and epic battles", "n": 5}
    _show(
        "a new user who liked the Star Wars trilogy and wrote a sentence",
        f"curl -s -X POST {base}/v1/recommendations -H 'Content-Type: application/json' "
        f"-d '{json.dumps(cold)}'",
        *_get(f"{base}/v1/recommendations", cold),
    )
    feedback = [{"user_id": args.user, "item_id": "50", "type": "like"}]
    _show(
        f"user {args.user} liked Star Wars: a write, keyed (without the key: 401)",
        f"curl -s -X POST {base}/v1/feedback -H 'X-API-Key: {api_key}' -H 'Content-Type: application/json' "
        f"-d '{json.dumps(feedback)}'",
        *_get(f"{base}/v1/feedback", feedback, key=api_key),
    )
    print(
        f"\nThe service keeps running (pid {pid}, logs in {LOG_DIR}/service.log; API docs at {base}/docs; "
        f"metrics at {base}/metrics). Stop it with `make stop`."
    )
    print(f"Total {time.perf_counter() - started:.0f} s on {_machine()}.")


if __name__ == "__main__":
    main()
