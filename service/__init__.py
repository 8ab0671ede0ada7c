"""Online recommendation service (FastAPI, onnxruntime, Qdrant, Redis; no torch).

onnxruntime writes a device id under ``$XDG_CACHE_HOME`` (else ``~/.cache``) when it is imported; the
service keeps that, like every other file it writes, under the configured work directory
(``<PROFILEREC_WORK_DIR>/cache``), so it runs with a read-only root filesystem and a read-only home.
"""

import os as _os
from pathlib import Path as _Path

if not _os.environ.get("XDG_CACHE_HOME"):
    _os.environ["XDG_CACHE_HOME"] = str(
        (_Path(_os.environ.get("PROFILEREC_WORK_DIR") or "var") / "cache").absolute()
    )
