"""The service writes nothing outside its work directory (the compose service has a read-only root)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_onnxruntime_state_goes_under_the_work_dir(tmp_path: Path) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "XDG_CACHE_HOME"}
    env.update({"HOME": str(home), "PROFILEREC_WORK_DIR": str(work), "PYTHONPATH": str(ROOT)})
    done = subprocess.run(
        [sys.executable, "-c", "import os, service.app, onnxruntime; print(os.environ['XDG_CACHE_HOME'])"],
        env=env,
        cwd=tmp_path,
        check=True,
        timeout=120,
        capture_output=True,
        text=True,
    )
    assert list(home.iterdir()) == []
    # Whether onnxruntime writes its device id at all depends on the machine; where it would go does not.
    assert done.stdout.strip() == str(work / "cache")
