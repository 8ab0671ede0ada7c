"""The categories a request may filter on: the bundle's catalogue plus those added through the API.

A filter on a category no item has is a client mistake (a typo, another catalogue's genre), answered
422 with the valid names instead of an answer that silently ignores it. Categories given to items
through ``PUT /v1/items`` by any worker are in the catalogue log, followed here (a ``stat`` when a
request names a category not known yet, nothing otherwise).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

from rec_contract.event_log import LogFollower
from service.errors import InvalidInputError


class KnownCategories:
    def __init__(self, catalog_log: Path) -> None:
        self.follower = LogFollower(catalog_log)
        self.added: set[str] = set()

    def sync(self) -> None:
        events, reset = self.follower.poll()
        if reset:
            self.added.clear()
        for event in events:
            if event.get("type") == "item_upsert":
                self.added.update(str(c) for c in event.get("categories") or ())

    def note(self, categories: Sequence[str]) -> None:
        """Categories this process just wrote to the catalogue log."""
        self.added.update(categories)

    def check(self, catalogue: Collection[str], requested: Sequence[str], field: str) -> None:
        """Raise :class:`InvalidInputError` (422, with the valid names) for a category no item has."""
        if all(c in catalogue or c in self.added for c in requested):
            return
        self.sync()
        unknown = [c for c in requested if c not in catalogue and c not in self.added]
        if unknown:
            valid = sorted(set(catalogue) | self.added)
            raise InvalidInputError(
                field,
                f"unknown categor{'y' if len(unknown) == 1 else 'ies'} {', '.join(map(repr, unknown[:10]))}; "
                f"valid: {', '.join(valid[:100])}",
                unknown=unknown[:50],
                valid=valid[:1000],
            )
