"""Line-oriented readers that fail with the file name and line number."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from training.data.errors import DataFormatError


def require_file(path: Path) -> Path:
    if not path.exists():
        raise DataFormatError(path, "file not found")
    if not path.is_file():
        raise DataFormatError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise DataFormatError(path, "file is empty")
    return path


def iter_lines(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, text without newline), skipping blank lines.

    Decoding is per line so that a bad byte is reported at its line.
    """
    require_file(path)
    any_line = False
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                text = raw.decode(encoding)
            except UnicodeDecodeError as exc:
                raise DataFormatError(
                    path,
                    f"not valid {encoding} (byte {raw[exc.start]:#04x} at column {exc.start + 1})",
                    number,
                ) from exc
            text = text.rstrip("\r\n")
            if not text.strip():
                continue
            any_line = True
            yield number, text
    if not any_line:
        raise DataFormatError(path, "file has no data lines")


def iter_fields(
    path: Path, sep: str, n_fields: int | tuple[int, int], encoding: str = "utf-8"
) -> Iterator[tuple[int, list[str]]]:
    """Split each line on ``sep`` and check the field count (exact, or an inclusive range)."""
    low, high = (n_fields, n_fields) if isinstance(n_fields, int) else n_fields
    for number, text in iter_lines(path, encoding):
        fields = text.split(sep)
        if not low <= len(fields) <= high:
            want = str(low) if low == high else f"{low}-{high}"
            raise DataFormatError(
                path, f"expected {want} fields separated by {sep!r}, got {len(fields)}", number
            )
        yield number, fields


def parse_int(path: Path, line: int, value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError as exc:
        raise DataFormatError(path, f"{what} is not an integer: {value!r}", line) from exc


def parse_float(path: Path, line: int, value: str, what: str) -> float:
    try:
        return float(value)
    except ValueError as exc:
        raise DataFormatError(path, f"{what} is not a number: {value!r}", line) from exc


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, text in iter_lines(path):
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataFormatError(path, f"invalid JSON: {exc.msg}", number) from exc
        if not isinstance(record, dict):
            raise DataFormatError(path, "expected a JSON object per line", number)
        yield number, record


def require_keys(path: Path, line: int, record: dict[str, Any], keys: tuple[str, ...]) -> None:
    missing = [k for k in keys if k not in record]
    if missing:
        raise DataFormatError(path, f"missing key(s) {', '.join(missing)}", line)
