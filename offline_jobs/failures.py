"""A failure confined to one entity (or one log record): which one, at which stage, where, and why.

The profile jobs record these instead of stopping when asked to (``isolate_failures``): the daily
refresh quarantines the failed entities in a dead-letter file and refreshes the others.
"""

from __future__ import annotations

import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parents[1]


def exception_site(exc: BaseException) -> str:
    """``file:line (function)`` of the innermost frame of ``exc``'s traceback."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "unknown"
    frame = frames[-1]
    path = Path(frame.filename)
    shown = path.relative_to(_ROOT).as_posix() if path.is_relative_to(_ROOT) else str(path)
    return f"{shown}:{frame.lineno} ({frame.name})"


@dataclass(frozen=True)
class EntityFailure:
    entity_type: str  # user | item | feedback_event | catalog_event
    entity_id: str
    stage: str
    reason: str  # "<exception type>: <message>", or why a record was refused
    where: str  # file:line (function) the exception came from, or the file a bad record came from
    traceback: str

    @classmethod
    def from_exception(
        cls, entity_type: str, entity_id: str, stage: str, exc: BaseException
    ) -> EntityFailure:
        return cls(
            entity_type=entity_type,
            entity_id=entity_id,
            stage=stage,
            reason=f"{type(exc).__name__}: {exc}",
            where=exception_site(exc),
            traceback="".join(traceback.format_exception(exc)),
        )

    @classmethod
    def rejected(cls, entity_type: str, entity_id: str, stage: str, reason: str, where: str) -> EntityFailure:
        """A record refused without an exception (e.g. a log event lacking an id; ``where``: its file)."""
        return cls(entity_type, entity_id, stage, reason, where, "")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EntityFailure:
        return cls(**{key: str(data.get(key, "")) for key in cls.__dataclass_fields__})

    def message(self) -> str:
        return (
            f"{self.entity_type} {self.entity_id!r}: stage {self.stage} failed at {self.where}: {self.reason}"
        )

    def as_dict(self) -> dict[str, str]:
        return asdict(self)
