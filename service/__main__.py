"""``profilerec-serve`` / ``python -m service``: run the API with uvicorn (uvloop + httptools)."""

from __future__ import annotations

import argparse

import uvicorn

from rec_contract.logs import configure_logging
from service.settings import ServiceSettings


def main(argv: list[str] | None = None) -> None:
    settings = ServiceSettings()
    parser = argparse.ArgumentParser(prog="profilerec-serve", description=__doc__)
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.port)
    parser.add_argument("--workers", type=int, default=settings.workers)
    args = parser.parse_args(argv)
    configure_logging()
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
