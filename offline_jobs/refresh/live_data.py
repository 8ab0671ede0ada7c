"""The live data: the base dataset plus everything the service logged since.

The service appends feedback events to the feedback log and item upserts to the catalogue log
(``rec_contract.event_log``). :func:`apply_logs` folds them into a copy of the base dataset: new items
(with their text) join the catalogue, updated items get their new text, positive feedback becomes
interactions (new users join), and everything skipped is counted. The daily refresh builds profiles
from it; the full retrain trains on it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from training.data import InteractionDataset, PredefinedSplit
from training.data.dataset import deduplicate_pairs

log = logging.getLogger(__name__)

# Feedback types that do not mean "the user liked the item".
NEGATIVE_TYPES = frozenset({"dislike", "skip", "hide", "not_interested", "dismiss"})
RATING_TYPE = "rating"


@dataclass
class LiveChanges:
    """What a batch of log events touched."""

    users: set[str] = field(default_factory=set)
    items: set[str] = field(default_factory=set)
    new_items: set[str] = field(default_factory=set)
    counts: dict[str, int] = field(default_factory=dict)

    def count(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n


def _has_id(event: dict[str, Any], key: str) -> bool:
    value = event.get(key)
    return isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip() != ""


def feedback_problem(event: dict[str, Any]) -> str | None:
    """Why a feedback event cannot be used (a record the service would not have written), or None."""
    for key in ("user_id", "item_id"):
        if not _has_id(event, key):
            return f"no usable {key} ({event.get(key)!r})"
    if event.get("type") == RATING_TYPE and event.get("value") is not None:
        try:
            float(event["value"])
        except (TypeError, ValueError):
            return f"rating value {event['value']!r} is not a number"
    return None


def catalog_problem(event: dict[str, Any]) -> str | None:
    """Why a catalogue event cannot be used, or None (events of other types are ignored, not bad)."""
    if event.get("type") != "item_upsert":
        return None
    if not _has_id(event, "item_id"):
        return f"no usable item_id ({event.get('item_id')!r})"
    if not isinstance(event.get("categories") or [], list):
        return f"categories {event.get('categories')!r} is not a list"
    return None


def is_positive(event: dict[str, Any], min_rating: float = 3.5) -> bool:
    kind = str(event.get("type", ""))
    if kind in NEGATIVE_TYPES:
        return False
    if kind == RATING_TYPE and event.get("value") is not None:
        return float(event["value"]) >= min_rating
    return True


def _timestamp(event: dict[str, Any]) -> int:
    for key in ("timestamp", "received_at"):
        value = event.get(key)
        if value:
            try:
                return int(datetime.fromisoformat(str(value)).timestamp())
            except ValueError:
                continue
    return -1


def changes_of(
    feedback: Iterable[dict[str, Any]], catalog: Iterable[dict[str, Any]], min_rating: float = 3.5
) -> LiveChanges:
    """Which users and items a batch of events concerns (users and items with new positive feedback,
    items added or edited through the API)."""
    changes = LiveChanges()
    for event in feedback:
        if feedback_problem(event):
            changes.count("invalid_feedback")
        elif is_positive(event, min_rating):
            changes.users.add(str(event["user_id"]))
            changes.items.add(str(event["item_id"]))
            changes.count("positive_feedback")
        else:
            changes.count("non_positive_feedback")
    for event in catalog:
        if catalog_problem(event):
            changes.count("invalid_catalog")
        elif event.get("type") == "item_upsert":
            changes.items.add(str(event["item_id"]))
            changes.new_items.add(str(event["item_id"]))
            changes.count("item_upserts")
    return changes


def _with_training(
    split: PredefinedSplit | None, users: list[int], items: list[int]
) -> PredefinedSplit | None:
    """A shipped split stays: the logged interactions (not held out) join its training part."""
    if split is None:
        return None
    held = {(int(u), int(i)) for part in (split.valid, split.test) for u, i in zip(*part, strict=True)}
    fresh = [(u, i) for u, i in zip(users, items, strict=True) if (u, i) not in held]
    extra_u = np.asarray([u for u, _ in fresh], np.int32)
    extra_i = np.asarray([i for _, i in fresh], np.int32)
    return PredefinedSplit(
        train=(np.concatenate([split.train[0], extra_u]), np.concatenate([split.train[1], extra_i])),
        valid=split.valid,
        test=split.test,
    )


def apply_logs(
    base: InteractionDataset,
    feedback: Iterable[dict[str, Any]],
    catalog: Iterable[dict[str, Any]],
    min_rating: float = 3.5,
) -> tuple[InteractionDataset, dict[str, int]]:
    """A new dataset: ``base`` plus catalogue upserts and positive feedback. Returns it with counts.
    Events that cannot be used (:func:`feedback_problem`, :func:`catalog_problem`) are counted as
    ``invalid`` and skipped."""
    counts: dict[str, int] = {
        "items_added": 0, "items_updated": 0, "interactions_added": 0, "skipped": 0, "invalid": 0
    }  # fmt: skip
    item_ids = [str(i) for i in base.item_ids]
    item_index = {raw: idx for idx, raw in enumerate(item_ids)}
    items = base.items.copy()
    added_rows: list[dict[str, Any]] = []
    for event in catalog:
        if event.get("type") != "item_upsert":
            continue
        if catalog_problem(event):
            counts["invalid"] += 1
            continue
        raw = str(event["item_id"])
        fields: dict[str, Any] = {
            "title": str(event.get("title") or raw),
            "categories": [str(c) for c in event.get("categories") or []],
            "description": str(event.get("text") or ""),
        }
        if raw in item_index:
            idx = item_index[raw]
            if idx < len(items):
                for key, value in fields.items():
                    items.at[idx, key] = value
            else:
                added_rows[idx - len(items)].update(fields)
            counts["items_updated"] += 1
        else:
            item_index[raw] = len(item_ids)
            item_ids.append(raw)
            added_rows.append(fields)
            counts["items_added"] += 1
    if added_rows:
        extra = pd.DataFrame(added_rows)
        for column in items.columns:
            if column not in extra.columns:
                extra[column] = ""
        items = pd.concat([items, extra[items.columns]], ignore_index=True)

    user_ids = [str(u) for u in base.user_ids]
    user_index = {raw: idx for idx, raw in enumerate(user_ids)}
    users, itms, stamps = [], [], []
    for event in feedback:
        if feedback_problem(event):
            counts["invalid"] += 1
            continue
        if not is_positive(event, min_rating):
            continue
        raw_item = str(event["item_id"])
        if raw_item not in item_index:
            counts["skipped"] += 1  # an item the service accepted but no longer knows: counted, not fatal
            continue
        raw_user = str(event["user_id"])
        if raw_user not in user_index:
            user_index[raw_user] = len(user_ids)
            user_ids.append(raw_user)
        users.append(user_index[raw_user])
        itms.append(item_index[raw_item])
        stamps.append(_timestamp(event))
    before = base.n_interactions
    user = np.concatenate([base.user, np.asarray(users, np.int32)])
    item = np.concatenate([base.item, np.asarray(itms, np.int32)])
    timestamp = np.concatenate([base.timestamp, np.asarray(stamps, np.int64)])
    user, item, timestamp, _ = deduplicate_pairs(user, item, timestamp)
    counts["interactions_added"] = len(user) - before
    predefined = _with_training(base.predefined_split, users, itms)
    user_table = None
    if base.users is not None:
        user_table = base.users.reindex(range(len(user_ids))).reset_index(drop=True)
    live = InteractionDataset(
        name=base.name,
        user_ids=np.array(user_ids, dtype=object),
        item_ids=np.array(item_ids, dtype=object),
        user=user,
        item=item,
        timestamp=timestamp,
        items=items.reset_index(drop=True),
        users=user_table,
        predefined_split=predefined,
        report={**base.report, "live_counts": counts},
    )
    live.validate()
    return live, counts
