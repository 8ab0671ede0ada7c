"""The README's main command from a fresh clone: ``make demo`` timed end to end, its log read back.

Clones the repository at a commit beside it (so the README's ``../shared/data`` holds), runs
``make demo`` with its output redirected to a file (not a terminal, as CI or a user's ``> log`` sees
it) and with pip's cache empty (``--pip-cache cold``, the default: every wheel downloaded, anything
without a wheel built) or the user's own (``warm``), then stops what the demo started and removes the
clone. Records the wall time against the 15-minute bar, the install time (wall minus the demo's own
``Total`` line), the log's line count, warning and traceback lines, and whether the log ends with
real recommendations (ranked titles in the known user's and the cold-start answers).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.results import print_table, record

REPO = Path(__file__).resolve().parents[1]
BAR_S = 15 * 60
MAX_LINES = 60
_WARNING = re.compile(r"warn", re.IGNORECASE)
_TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^\S*Error: ", re.MULTILINE)
_TOTAL = re.compile(r"^Total (\d+) s on (.+)\.$", re.MULTILINE)
_RANKED = re.compile(r"^\s+\d+\. .+ score -?\d+\.\d+  \[.*\]$", re.MULTILINE)


def read_log(text: str) -> dict[str, Any]:
    """What a reader of the demo's log checks: length, warnings, tracebacks, the total, real answers."""
    lines = text.splitlines()
    total = _TOTAL.search(text)
    return {
        "lines": len(lines),
        "warning_lines": [ln for ln in lines if _WARNING.search(ln)],
        "tracebacks": len(_TRACEBACK.findall(text)),
        "demo_total_s": float(total.group(1)) if total else None,
        "demo_machine": total.group(2) if total else None,
        "recommendation_lines": len(_RANKED.findall(text)),
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _clean_env(pip_cache: Path | None, data_dir: str) -> dict[str, str]:
    """The caller's environment without this repository's virtualenv (the clone makes its own)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROFILEREC_", "PIP_", "VIRTUAL_ENV"))}
    env.pop("PYTHONPATH", None)
    venv_bin = str(REPO / ".venv" / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env["PROFILEREC_DATA_DIR"] = data_dir
    env["PROFILEREC_PORT"] = str(_free_port())
    env["PROFILEREC_DEMO_REDIS_PORT"] = str(_free_port())
    if pip_cache is not None:
        env["PIP_CACHE_DIR"] = str(pip_cache)
    return env


def run(ref: str, pip_cache: str, keep: bool, parent: Path) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="fresh-demo-", dir=parent))
    clone = work / "profilerec"
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short=12", ref], capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "--quiet", commit], check=True)
    cache = work / "pip-cache" if pip_cache == "cold" else None
    data_dir = os.environ.get("PROFILEREC_DATA_DIR") or str((REPO / ".." / "shared" / "data").resolve())
    env = _clean_env(cache, data_dir)
    log = work / "demo.log"
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    with log.open("w") as out:
        rc = subprocess.run(
            ["make", "demo"], check=False, cwd=clone, env=env, stdout=out, stderr=subprocess.STDOUT
        ).returncode
    wall = time.perf_counter() - started
    load_after = os.getloadavg()[0]
    subprocess.run(["make", "stop"], check=False, cwd=clone, env=env, capture_output=True)
    text = log.read_text(errors="replace")
    seen = read_log(text)
    row = {
        "commit": commit,
        "pip_cache": pip_cache,
        "exit_code": rc,
        "wall_s": round(wall, 1),
        "install_s": round(wall - seen["demo_total_s"], 1) if seen["demo_total_s"] is not None else None,
        "within_15_min": rc == 0 and wall <= BAR_S,
        "lines": seen["lines"],
        "within_60_lines": seen["lines"] <= MAX_LINES,
        "warnings": len(seen["warning_lines"]),
        "tracebacks": seen["tracebacks"],
        "recommendation_lines": seen["recommendation_lines"],
        "demo_total_s": seen["demo_total_s"],
        "demo_machine": seen["demo_machine"],
        "loadavg_1m_before": round(load_before, 2),
        "loadavg_1m_after": round(load_after, 2),
    }
    if keep:
        row["kept"] = str(work)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return {"row": row, "warning_lines": seen["warning_lines"][:10], "log_tail": text.splitlines()[-12:]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ref", default="HEAD", help="the commit to clone (committed work only)")
    parser.add_argument(
        "--pip-cache",
        choices=("cold", "warm"),
        default="cold",
        help="cold: an empty pip cache (every wheel downloaded); warm: the user's own cache",
    )
    parser.add_argument("--keep", action="store_true", help="keep the clone, its .venv and the log")
    parser.add_argument(
        "--parent",
        type=Path,
        default=REPO.parent,
        help="where the clone goes (beside the repository by default)",
    )
    parser.add_argument("--no-record", action="store_true", help="print only")
    args = parser.parse_args(argv)
    out = run(args.ref, args.pip_cache, args.keep, args.parent)
    row = out["row"]
    print_table([row], "make demo from a fresh clone (output to a file)")
    for line in out["warning_lines"]:
        print("warning line:", line)
    print("\n".join(out["log_tail"]))
    if not args.no_record:
        record(
            "fresh_demo",
            {"table": [row], "warning_lines": out["warning_lines"]},
            {"ref": args.ref, "pip_cache": args.pip_cache, "bar_s": BAR_S, "max_lines": MAX_LINES},
        )


if __name__ == "__main__":
    main()
