"""What each user interacted with since the bundle was built: the feedback log, followed.

The feedback log is the durable record (every accepted batch is appended and fsynced before the
answer); this index is rebuilt from it when the process starts and kept in step with one ``stat`` per
request, so every worker process excludes an item from the answer after the one that acknowledged the
feedback, and a restarted Redis (or none at all) changes nothing.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from rec_contract.event_log import LogFollower

log = logging.getLogger(__name__)


class FeedbackIndex:
    def __init__(self, path: Path) -> None:
        self.follower = LogFollower(path)
        self.items: dict[str, set[str]] = {}
        self.events = 0

    def sync(self) -> int:
        """Apply what was appended since the last call. Returns the number of new events."""
        events, reset = self.follower.poll()
        if reset:
            self.items.clear()
            self.events = 0
        for event in events:
            user, item = event.get("user_id"), event.get("item_id")
            if isinstance(user, str) and isinstance(item, str):
                self.items.setdefault(user, set()).add(item)
                self.events += 1
        return len(events)

    def load(self) -> None:
        started = time.perf_counter()
        self.sync()
        log.info(
            "feedback log indexed",
            extra={
                "path": str(self.follower.path),
                "events": self.events,
                "users": len(self.items),
                "seconds": round(time.perf_counter() - started, 3),
            },
        )

    def items_of(self, user_id: str) -> set[str]:
        return self.items.get(user_id, set())
