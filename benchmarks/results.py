"""Recording benchmark figures with their provenance.

Every run appends one JSON line to ``benchmarks/results.jsonl`` (kept in the repository) with the
git commit (and whether the tree was dirty), the UTC date, the machine, the parameters and the
figures, then re-renders ``benchmarks/RESULTS.md`` from the whole file.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rec_contract.atomic import atomic_write_text

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_FILE = Path(os.environ.get("PROFILEREC_BENCH_RESULTS", BENCH_DIR / "results.jsonl"))


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=BENCH_DIR, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_kb = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
    except (OSError, StopIteration):
        mem_kb = 0
    return {
        "host": platform.node(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024**2, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


# the results files themselves do not make the tree dirty (a benchmark recording several parts changes them)
_NOT_RESULTS = (":/", ":(top,exclude)benchmarks/results.jsonl", ":(top,exclude)benchmarks/RESULTS.md")


def provenance() -> dict[str, Any]:
    return {
        "commit": _git("rev-parse", "--short=12", "HEAD") or "unknown",
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no", "--", *_NOT_RESULTS)),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
    }


def record(benchmark: str, figures: dict[str, Any], params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Append one result line and re-render the Markdown summary. Returns the record."""
    entry = {"benchmark": benchmark, **provenance(), "params": params or {}, "figures": figures}
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS_FILE.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry, default=_jsonable) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    render_markdown()
    return entry


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def load_results(path: Path | None = None) -> list[dict[str, Any]]:
    path = path or RESULTS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def render_markdown(path: Path | None = None) -> Path:
    results = load_results()
    out = path or RESULTS_FILE.with_name("RESULTS.md")
    lines = [
        "# Benchmark results",
        "",
        "Generated from `results.jsonl` by `benchmarks/results.py`; newest first per benchmark.",
        "Each row is one run, with the commit it ran on (`+` marks uncommitted changes) and the machine.",
        "",
    ]
    by_name: dict[str, list[dict[str, Any]]] = {}
    for entry in results:
        by_name.setdefault(entry["benchmark"], []).append(entry)
    for name in sorted(by_name):
        lines += [f"## {name}", ""]
        for entry in reversed(by_name[name]):
            commit = entry["commit"] + ("+" if entry.get("dirty") else "")
            mach = entry.get("machine", {})
            lines.append(
                f"- {entry['date']} `{commit}` on {mach.get('cores')} cores ({mach.get('cpu', '?')}); "
                f"params: `{json.dumps(entry.get('params', {}), sort_keys=True)}`"
            )
            figures = entry.get("figures", {})
            rows = figures.get("table") if isinstance(figures, dict) else None
            if isinstance(rows, list) and rows and isinstance(rows[0], dict):
                header = list(rows[0])
                lines.append("")
                lines.append("  | " + " | ".join(header) + " |")
                lines.append("  | " + " | ".join("---" for _ in header) + " |")
                for row in rows:
                    lines.append("  | " + " | ".join(_fmt(row.get(h, "")) for h in header) + " |")
                lines.append("")
            scalars = {k: v for k, v in figures.items() if k != "table"}
            if scalars:
                lines.append("  - " + ", ".join(f"{k}: {_fmt(v)}" for k, v in scalars.items()))
        lines.append("")
    atomic_write_text(out, "\n".join(lines) + "\n")
    return out


def print_table(rows: list[dict[str, Any]], title: str | None = None) -> None:
    if title:
        print(title)
    if not rows:
        print("(no rows)")
        return
    header = list(rows[0])
    widths = [max(len(h), *(len(_fmt(r.get(h, ""))) for r in rows)) for h in header]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print("  ".join(_fmt(row.get(h, "")).ljust(w) for h, w in zip(header, widths, strict=True)))
