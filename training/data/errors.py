"""Errors and reports of data ingestion.

Every loader either raises :class:`DataFormatError` naming the file (and the line when there is one),
or counts what it had to change in an :class:`IngestReport` that is logged and saved with the dataset.
Nothing is dropped without being counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


class DataFormatError(ValueError):
    """A data file is malformed. The message names the file and, where it applies, the 1-based line."""

    def __init__(self, path: str | Path, message: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        self.reason = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


@dataclass
class IngestReport:
    """What ingestion changed or skipped, with counts, so that nothing disappears silently."""

    source: str
    rows_read: int = 0
    duplicates_merged: int = 0
    unknown_ids_dropped: int = 0
    notes: list[str] = field(default_factory=list)

    def add_note(self, note: str) -> None:
        self.notes.append(note)

    def as_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "rows_read": self.rows_read,
            "duplicates_merged": self.duplicates_merged,
            "unknown_ids_dropped": self.unknown_ids_dropped,
            "notes": list(self.notes),
        }
