"""Append-only JSON-lines logs: the feedback log and the catalogue log.

The service appends (several workers may append to the same file: each batch is one ``write`` under an
exclusive ``flock``, then fsynced, so lines never interleave and an acknowledged batch survives a
crash). The refresh job reads from a byte offset (its watermark) and only consumes complete lines, so
a line being written while it reads is picked up by the next run.

A writer killed in the middle of its ``write`` (a large batch: the kernel may stop a write to a regular
file part way on a fatal signal; or a full disk) leaves a torn last line with no newline, and it was
never acknowledged. The next append ends that fragment with a newline first (under the lock, so no other
writer can be mid-line), which makes it one malformed line that the readers count and skip, instead
of gluing it to the next batch's first event, which would have lost an acknowledged event.
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
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":  # a torn line left by a killed writer
                data = b"\n" + data
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


class LogFollower:
    """Follows an append-only log from the start: each :meth:`poll` returns the complete lines added
    since the previous one. A poll with nothing new costs one ``stat``. When the file is replaced or
    truncated (another inode, or shorter than what was read), :attr:`resets` is incremented and the
    whole file is read again: the caller rebuilds its state from what the poll returns."""

    def __init__(self, path: str | Path, chunk_bytes: int = 16 << 20) -> None:
        self.path = Path(path)
        self.offset = 0
        self.inode: int | None = None
        self.resets = 0
        self.malformed = 0
        self.chunk_bytes = chunk_bytes

    def poll(self) -> tuple[list[dict[str, Any]], bool]:
        """``(new events, reset)``: ``reset`` means the events are the whole log, not a tail."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            if self.offset:
                self.offset, self.inode, self.resets = 0, None, self.resets + 1
                return [], True
            return [], False
        reset = False
        if (self.inode is not None and st.st_ino != self.inode) or st.st_size < self.offset:
            self.offset, reset, self.resets = 0, True, self.resets + 1
        self.inode = st.st_ino
        if st.st_size == self.offset:
            return [], reset
        events: list[dict[str, Any]] = []
        while self.offset < st.st_size:
            chunk = read_events(self.path, self.offset, self.chunk_bytes)
            if chunk.end_offset == self.offset:  # an incomplete last line: next poll
                break
            events.extend(chunk.events)
            self.malformed += chunk.malformed
            self.offset = chunk.end_offset
        return events, reset
