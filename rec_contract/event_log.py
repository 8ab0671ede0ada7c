"""Append-only JSON-lines logs: the feedback log and the catalogue log.

The service appends (several workers may append to the same file: each batch is one ``write`` under an
exclusive ``flock``, then fsynced, so lines never interleave and an acknowledged batch survives a
crash). The refresh job reads from a byte offset (its watermark) and only consumes complete lines, so
a line being written while it reads is picked up by the next run.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def append_events(path: str | Path, events: Sequence[dict[str, Any]]) -> int:
    """Append ``events`` as JSON lines durably. Returns how many were written."""
    if not events:
        return 0
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(e, separators=(",", ":"), ensure_ascii=False) + "\n" for e in events).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    return len(events)


@dataclass
class LogChunk:
    events: list[dict[str, Any]]
    start_offset: int
    end_offset: int  # the next watermark: just past the last complete line read
    malformed: int  # complete lines that were not JSON objects (counted, skipped)


def read_events(path: str | Path, offset: int = 0, max_bytes: int | None = None) -> LogChunk:
    """Complete lines from byte ``offset`` on (at most about ``max_bytes``)."""
    path = Path(path)
    if not path.exists():
        return LogChunk([], offset, offset, 0)
    size = path.stat().st_size
    if offset > size:
        raise ValueError(
            f"{path}: watermark {offset} is past the end of the log ({size} bytes): was it truncated?"
        )
    with path.open("rb") as fh:
        fh.seek(offset)
        data = fh.read(max_bytes if max_bytes is not None else size - offset)
    cut = data.rfind(b"\n")
    if cut < 0:
        return LogChunk([], offset, offset, 0)
    events: list[dict[str, Any]] = []
    malformed = 0
    for line in data[: cut + 1].splitlines():
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            malformed += 1
            continue
        if isinstance(value, dict):
            events.append(value)
        else:
            malformed += 1
    return LogChunk(events, offset, offset + cut + 1, malformed)
