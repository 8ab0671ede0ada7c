"""Online recommendation service (FastAPI, onnxruntime, Qdrant, Redis; no torch).

A request does a few small products (one user vector against the catalogue): BLAS threads cost more
than they give there, and with several worker processes on few cores their spinning starves the other
workers, so the service runs numpy's BLAS single-threaded unless told otherwise (set before numpy is
first imported; the ONNX sessions are single-threaded too, see ``service.bundle_runtime``).

onnxruntime writes a device id under ``$XDG_CACHE_HOME`` (else ``~/.cache``) when it is imported; the
service keeps that, like every other file it writes, under the configured work directory
(``<PROFILEREC_WORK_DIR>/cache``), so it runs with a read-only root filesystem and a read-only home.
"""

import os as _os
from pathlib import Path as _Path

for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    _os.environ.setdefault(_name, "1")

if not _os.environ.get("XDG_CACHE_HOME"):
    _os.environ["XDG_CACHE_HOME"] = str(
        (_Path(_os.environ.get("PROFILEREC_WORK_DIR") or "var") / "cache").absolute()
    )
