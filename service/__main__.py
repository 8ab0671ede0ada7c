"""``profilerec-serve`` / ``python -m service``: run the API with uvicorn (uvloop + httptools).

With several workers (``PROFILEREC_WORKERS`` or ``--workers``), the workers share the metrics through
Prometheus' multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR`` (default ``<work_dir>/run/prometheus``) is
emptied at start and every worker writes its values there, so ``/metrics`` answered by any worker
aggregates all of them.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import uvicorn

from rec_contract.logs import configure_logging
from service.settings import ServiceSettings


def prepare_multiprocess_metrics(settings: ServiceSettings, workers: int) -> Path | None:
    """Set up (and clear) the multiprocess metrics folder before any worker starts."""
    if workers <= 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None
    folder = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or settings.work_dir / "run" / "prometheus")
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder.resolve())
    return folder


def main(argv: list[str] | None = None) -> None:
    settings = ServiceSettings()
    parser = argparse.ArgumentParser(prog="profilerec-serve", description=__doc__)
    parser.add_argument("--host", default=settings.host, help="bind address (default: PROFILEREC_HOST)")
    parser.add_argument("--port", type=int, default=settings.port, help="port (default: PROFILEREC_PORT)")
    parser.add_argument(
        "--workers", type=int, default=settings.workers, help="worker processes (default: PROFILEREC_WORKERS)"
    )
    args = parser.parse_args(argv)
    configure_logging()
    prepare_multiprocess_metrics(settings, args.workers)
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
    )


if __name__ == "__main__":
    main()
