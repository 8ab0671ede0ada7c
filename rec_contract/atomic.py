"""Atomic file and directory writes.

A reader never sees a half-written file: content goes to a temporary sibling, is flushed and fsynced,
then renamed over the target (``os.replace`` is atomic on POSIX within one filesystem).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            Path(tmp).unlink()
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_file(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto ``path``.

    For writers that need a file name (Parquet, ONNX, numpy) rather than bytes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp{suffix}"
    try:
        yield tmp
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
        tmp.replace(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """Build a directory in a temporary sibling, then swap it into place.

    If ``target`` exists it is moved aside and removed only after the new one is in place, so a
    crash leaves either the old or the new directory (plus, at worst, a stale ``.old`` sibling that
    the next call cleans up).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = target.parent / f".{target.name}.old"
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.replace(old)
    tmp.replace(target)
    _fsync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)


def point_symlink(link: str | Path, target: str | Path) -> None:
    """Atomically make ``link`` a symlink to ``target``.

    ``target`` is a path as the caller sees it (absolute, or relative to the working directory, like
    ``link``); the link stores it relative to the link's own folder (just the name when both share a
    folder), so the pair can be moved together. The new link is checked to resolve to ``target``
    before it replaces the old one: a pointer that would dangle raises ``OSError`` and is not written.
    """
    link = Path(link)
    wanted = Path(target).resolve()
    folder = link.parent.resolve()
    tmp = folder / f".{link.name}.{uuid.uuid4().hex[:8]}.lnk"
    tmp.symlink_to(os.path.relpath(wanted, folder))
    try:
        if tmp.resolve() != wanted or not wanted.exists():
            raise OSError(f"{link} -> {tmp.readlink()} would not resolve to {wanted}")
        tmp.replace(link)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(folder)
