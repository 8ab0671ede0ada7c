"""What an extractive profile is grounded on: the catalogue items its text names.

An extractive profile (:mod:`offline_jobs.profiles.extractive`) is assembled from the entity's own data, so it
is grounded by construction; its explanation label still names the items it rests on, as an LLM profile's
does (``quality["grounding"]["grounded_on"]``, see :mod:`rec_contract.explanations`): for a user, the
training-history items the text names; for an item, the item itself and the other catalogue items the
text names (its co-watched or similar items, all taken from the data).

The profiler writes catalogue titles verbatim (:meth:`ExtractiveProfiler.item_label`), so the items are
found by exact substring search of the candidates' titles: a user's history, or every catalogue title
for an item. A title found only inside a longer title found at the same place ("Alien" within
"Aliens") does not count.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from offline_jobs.profiles.extractive import ExtractiveProfiler


def named_items(profiler: ExtractiveProfiler, text: str, candidates: Iterable[int]) -> list[int]:
    """The candidate items whose catalogue title ``text`` contains, in order of first mention."""
    spans: list[tuple[int, int, int]] = []  # (start, end, item)
    for item in candidates:
        title = profiler.item_label(int(item))
        if not title:
            continue
        start = text.find(title)
        while start >= 0:
            spans.append((start, start + len(title), int(item)))
            start = text.find(title, start + 1)
    spans.sort(key=lambda s: (s[0], -(s[1] - s[0])))
    kept: list[int] = []
    covered_to = -1
    for _start, end, item in spans:
        if end <= covered_to:  # inside a longer title mentioned at the same place
            continue
        covered_to = max(covered_to, end)
        if item not in kept:
            kept.append(item)
    return kept


def grounded_on(profiler: ExtractiveProfiler, entity_type: str, index: int, text: str) -> list[int]:
    """The items (indices) an extractive profile of this entity is grounded on (module docstring)."""
    ctx = profiler.ctx
    if entity_type == "user":
        return named_items(profiler, text, ctx.user_items(index))
    others = (i for i in range(ctx.dataset.n_items) if i != index)
    return named_items(profiler, text, [index, *others])


def extractive_grounding(
    profiler: ExtractiveProfiler,
    entity_type: str,
    index: int,
    text: str,
    item_ids: Sequence[Any] | np.ndarray,
) -> dict[str, Any]:
    """The ``quality["grounding"]`` record of an extractive profile: passed by construction, with the
    raw ids of the items it names."""
    return {
        "passed": True,
        "by_construction": True,
        "grounded_on": [str(item_ids[i]) for i in grounded_on(profiler, entity_type, index, text)],
    }
