"""Bring-your-own data: interactions, items and (optionally) users as CSV, Parquet or JSON lines.

Interactions (required): columns ``user_id``, ``item_id``; optional ``timestamp`` (unix seconds or an
ISO-8601 date-time), ``rating`` (used with ``min_rating``) and ``split`` (``train``/``valid``/``test``,
which then becomes the dataset's predefined split).

Items (optional but needed for profiles): ``item_id``; optional ``title``, ``categories`` (a list in
JSON/Parquet, or a ``|``-separated string in CSV), ``description``; any other column is kept as text.

Users (optional): ``user_id`` plus any attribute columns.

The names above are the defaults: :class:`ColumnNames` reads the fields from other columns (MovieLens
``ratings.csv``: ``userId``, ``movieId``, ``rating``, ``timestamp``; ``movies.csv``: ``movieId``,
``title``, ``genres`` separated by ``|``), so files import as they are.

Rules: a row with an empty id, an unparsable timestamp or rating, or an item missing from the item file
fails with the file and line (``unknown_items="drop"`` counts and drops them instead); duplicate
(user, item) rows are merged keeping the earliest timestamp, and counted. Files must be UTF-8.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from training.data.dataset import InteractionDataset, PredefinedSplit, build_index, deduplicate_pairs
from training.data.errors import DataFormatError, IngestReport
from training.data.textio import iter_jsonl, iter_lines, require_file

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "valid", "test")


@dataclass(frozen=True)
class ColumnNames:
    """Which column of the input files holds each field (the defaults are the canonical names).

    Interactions: ``user``, ``item``, ``rating``, ``timestamp``, ``split``; items: ``item_id``,
    ``title``, ``categories`` (a string split on ``categories_sep``, or a list), ``description``;
    users: ``user_id``.
    """

    user: str = "user_id"
    item: str = "item_id"
    rating: str = "rating"
    timestamp: str = "timestamp"
    split: str = "split"
    item_id: str = "item_id"
    title: str = "title"
    categories: str = "categories"
    description: str = "description"
    user_id: str = "user_id"
    categories_sep: str = "|"

    def renamed(self) -> set[str]:
        """The fields whose column was named explicitly (a missing one is then an error, not absent)."""
        default = ColumnNames()
        return {f.name for f in fields(self) if getattr(self, f.name) != getattr(default, f.name)}


# field of ColumnNames -> the canonical column it becomes, per file
INTERACTION_FIELDS = {
    "user": "user_id",
    "item": "item_id",
    "rating": "rating",
    "timestamp": "timestamp",
    "split": "split",
}
ITEM_FIELDS = {
    "item_id": "item_id",
    "title": "title",
    "categories": "categories",
    "description": "description",
}
USER_FIELDS = {"user_id": "user_id"}


def canonical_columns(
    path: Path,
    frame: pd.DataFrame,
    columns: ColumnNames,
    field_map: dict[str, str],
    required: tuple[str, ...] = (),
) -> pd.DataFrame:
    """Rename the columns ``columns`` names for the fields of ``field_map`` (field -> canonical column)
    to their canonical names. ``required`` fields, and fields whose column was named explicitly, must
    exist; a file that has both the named column and another one under the canonical name fails."""
    explicit = columns.renamed()
    needed = [getattr(columns, f) for f in field_map if f in required or f in explicit]
    _require_columns(path, frame, tuple(needed))
    renames = {
        getattr(columns, f): target
        for f, target in field_map.items()
        if getattr(columns, f) != target and getattr(columns, f) in frame.columns
    }
    for source, target in renames.items():
        if target in frame.columns and target not in renames:
            raise DataFormatError(
                path, f"column {source!r} is read as {target!r} but the file also has a column {target!r}"
            )
    return frame.rename(columns=renames)


def _row_label(path: Path, row: int) -> int:
    """The line of data row ``row`` (0-based): CSV has a header line, JSONL does not."""
    return row + 2 if path.suffix.lower() in (".csv", ".tsv") else row + 1


def read_table(path: str | Path) -> pd.DataFrame:
    """Read CSV/TSV (header row), Parquet or JSON lines into a frame of strings/objects."""
    path = Path(path)
    require_file(path)
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        for _ in iter_lines(path):  # checks the encoding line by line, naming the bad line
            pass
        try:
            frame = pd.read_csv(
                path,
                sep="\t" if suffix == ".tsv" else ",",
                dtype=str,
                keep_default_na=False,
                encoding="utf-8",
            )
        except pd.errors.ParserError as exc:
            raise DataFormatError(path, f"CSV parse error: {exc}") from exc
    elif suffix in (".jsonl", ".ndjson", ".json"):
        frame = pd.DataFrame.from_records([record for _, record in iter_jsonl(path)])
    elif suffix == ".parquet":
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:
            raise DataFormatError(path, f"not a readable Parquet file ({exc})") from exc
    else:
        raise DataFormatError(path, f"unsupported extension {suffix!r} (use .csv, .tsv, .jsonl or .parquet)")
    if frame.empty:
        raise DataFormatError(path, "no data rows")
    return frame


def _require_columns(path: Path, frame: pd.DataFrame, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataFormatError(
            path, f"missing column(s) {', '.join(missing)}; found {', '.join(map(str, frame.columns))}"
        )


def _ids(path: Path, frame: pd.DataFrame, column: str) -> list[str]:
    values = frame[column].map(
        lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
    )
    empty = np.flatnonzero(values.str.strip().to_numpy() == "")
    if len(empty):
        raise DataFormatError(path, f"empty {column}", _row_label(path, int(empty[0])))
    return values.str.strip().tolist()


def _timestamps(path: Path, frame: pd.DataFrame) -> np.ndarray:
    if "timestamp" not in frame.columns:
        return np.full(len(frame), -1, dtype=np.int64)
    out = np.empty(len(frame), dtype=np.int64)
    for row, value in enumerate(frame["timestamp"].tolist()):
        text = str(value).strip()
        try:
            out[row] = int(float(text))
            continue
        except ValueError:
            pass
        try:
            stamp = pd.Timestamp(text)
        except (ValueError, TypeError) as exc:
            raise DataFormatError(
                path, f"timestamp {text!r} is neither unix seconds nor ISO-8601", _row_label(path, row)
            ) from exc
        if stamp.tzinfo is None:
            stamp = stamp.tz_localize("UTC")
        out[row] = int(stamp.timestamp())
    return out


def _categories(value: Any, sep: str = "|") -> list[str]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    if isinstance(value, list | tuple | np.ndarray):
        return [str(v).strip() for v in value if str(v).strip()]
    text = str(value).strip()
    if text.startswith("["):
        try:
            parsed = json.loads(text)
            if isinstance(parsed, list):
                return [str(v).strip() for v in parsed if str(v).strip()]
        except json.JSONDecodeError:
            pass
    return [part.strip() for part in text.split(sep) if part.strip()]


def _at_least(inter_path: Path, frame: pd.DataFrame, min_rating: float, report: IngestReport) -> np.ndarray:
    """Which rows are positives: a rating of at least ``min_rating`` (a rating that is not a number fails)."""
    ratings = pd.to_numeric(frame["rating"], errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(np.isnan(ratings))
    if len(bad):
        raise DataFormatError(
            inter_path,
            f"rating {frame['rating'].iloc[bad[0]]!r} is not a number",
            _row_label(inter_path, int(bad[0])),
        )
    below = ratings < min_rating
    if below.any():
        report.add_note(f"{int(below.sum())} rows below min_rating={min_rating} not used as positives")
    return ~below


def _split_labels(inter_path: Path, frame: pd.DataFrame, idx: np.ndarray) -> np.ndarray | None:
    """The ``split`` column of the kept rows (train/valid/test), if the file has one."""
    if "split" in frame.columns:
        labels = frame["split"].astype(str).str.strip().str.lower().to_numpy()[idx]
        bad = np.flatnonzero(~np.isin(labels, SPLIT_NAMES))
        if len(bad):
            raise DataFormatError(
                inter_path,
                f"split must be one of {', '.join(SPLIT_NAMES)}, got {labels[bad[0]]!r}",
                _row_label(inter_path, int(idx[bad[0]])),
            )
        return labels
    return None


def _deduplicate(
    inter_path: Path,
    user_arr: np.ndarray,
    item_arr: np.ndarray,
    ts_arr: np.ndarray,
    split_labels: np.ndarray | None,
    n_items: int,
    report: IngestReport,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, PredefinedSplit | None]:
    """One row per (user, item) pair (within each part of a shipped split, which must not share pairs)."""
    if split_labels is None:
        user_arr, item_arr, ts_arr, merged = deduplicate_pairs(user_arr, item_arr, ts_arr)
        report.duplicates_merged = merged
        predefined = None
    else:
        parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        all_u, all_i, all_t = [], [], []
        merged = 0
        for part in SPLIT_NAMES:
            sel = split_labels == part
            u, i, t, m = deduplicate_pairs(user_arr[sel], item_arr[sel], ts_arr[sel])
            merged += m
            parts[part] = (u, i)
            all_u.append(u)
            all_i.append(i)
            all_t.append(t)
        user_arr, item_arr, ts_arr = np.concatenate(all_u), np.concatenate(all_i), np.concatenate(all_t)
        pair_keys = user_arr.astype(np.int64) * max(1, n_items) + item_arr
        if len(np.unique(pair_keys)) != len(pair_keys):
            raise DataFormatError(
                inter_path, "the same (user_id, item_id) appears in more than one split part"
            )
        report.duplicates_merged = merged
        predefined = PredefinedSplit(train=parts["train"], valid=parts["valid"], test=parts["test"])
    return user_arr, item_arr, ts_arr, predefined


def _item_table(
    item_frame: pd.DataFrame | None, item_ids: np.ndarray, columns: ColumnNames, report: IngestReport
) -> pd.DataFrame:
    """The canonical item table (title, categories, description, other text columns)."""
    n_items = len(item_ids)
    if item_frame is not None:
        item_table = pd.DataFrame(
            {
                "title": item_frame.get("title", pd.Series(list(item_ids))).astype(str).tolist(),
                "categories": [
                    _categories(v, columns.categories_sep)
                    for v in item_frame.get("categories", pd.Series([None] * n_items))
                ],
                "description": item_frame.get("description", pd.Series([""] * n_items)).astype(str).tolist(),
            }
        )
        for column in item_frame.columns:
            if column not in ("item_id", "title", "categories", "description"):
                item_table[column] = item_frame[column].astype(str).tolist()
    else:
        item_table = pd.DataFrame(
            {
                "title": list(item_ids),
                "categories": [[] for _ in range(n_items)],
                "description": [""] * n_items,
            }
        )
        report.add_note("no item file: items have no text beyond their ids")
    return item_table


def load_generic(
    interactions: str | Path,
    items: str | Path | None = None,
    users: str | Path | None = None,
    name: str = "custom",
    min_rating: float | None = None,
    unknown_items: Literal["error", "drop"] = "error",
    columns: ColumnNames | None = None,
) -> InteractionDataset:
    columns = columns or ColumnNames()
    inter_path = Path(interactions)
    report = IngestReport(source=str(inter_path))
    required = ("user", "item", "rating") if min_rating is not None else ("user", "item")
    frame = canonical_columns(inter_path, read_table(inter_path), columns, INTERACTION_FIELDS, required)
    report.rows_read = len(frame)
    raw_users = _ids(inter_path, frame, "user_id")
    raw_items = _ids(inter_path, frame, "item_id")
    stamps = _timestamps(inter_path, frame)
    keep = np.ones(len(frame), dtype=bool)

    if min_rating is not None:
        keep &= _at_least(inter_path, frame, min_rating, report)

    # Item table: the catalogue defines the item index; interaction ids must be in it.
    item_frame: pd.DataFrame | None = None
    if items is not None:
        item_path = Path(items)
        item_frame = canonical_columns(item_path, read_table(item_path), columns, ITEM_FIELDS, ("item_id",))
        catalogue = _ids(item_path, item_frame, "item_id")
        dupes = pd.Series(catalogue).duplicated()
        if dupes.any():
            row = int(np.flatnonzero(dupes.to_numpy())[0])
            raise DataFormatError(
                item_path, f"duplicate item_id {catalogue[row]!r}", _row_label(item_path, row)
            )
        item_ids, item_map = build_index(catalogue)
        known = np.array([i in item_map for i in raw_items])
        if not known.all():
            first = int(np.flatnonzero(~known)[0])
            if unknown_items == "error":
                raise DataFormatError(
                    inter_path,
                    f"item_id {raw_items[first]!r} is not in {item_path.name} "
                    f"({int((~known).sum())} such rows; "
                    "pass unknown_items='drop' to drop and count them)",
                    _row_label(inter_path, first),
                )
            report.unknown_ids_dropped += int((~known & keep).sum())
            keep &= known
    else:
        item_ids, item_map = build_index([i for i, k in zip(raw_items, keep, strict=True) if k])

    kept_users = [u for u, k in zip(raw_users, keep, strict=True) if k]
    user_ids, user_map = build_index(kept_users)
    user_frame: pd.DataFrame | None = None
    if users is not None:
        user_path = Path(users)
        raw_user_frame = canonical_columns(
            user_path, read_table(user_path), columns, USER_FIELDS, ("user_id",)
        )
        listed = _ids(user_path, raw_user_frame, "user_id")
        if pd.Series(listed).duplicated().any():
            row = int(np.flatnonzero(pd.Series(listed).duplicated().to_numpy())[0])
            raise DataFormatError(user_path, f"duplicate user_id {listed[row]!r}", _row_label(user_path, row))
        # Users in the user file but without interactions are still users (cold start).
        for raw in listed:
            if raw not in user_map:
                user_map[raw] = len(user_map)
        user_ids = np.array(list(user_map), dtype=object)
        attrs = raw_user_frame.assign(user_id=listed).set_index("user_id")
        user_frame = attrs.reindex(list(user_ids)).reset_index(drop=True)

    idx = np.flatnonzero(keep)
    user_arr = np.array([user_map[raw_users[r]] for r in idx], dtype=np.int32)
    item_arr = np.array([item_map[raw_items[r]] for r in idx], dtype=np.int32)
    ts_arr = stamps[idx]
    split_labels = _split_labels(inter_path, frame, idx)
    user_arr, item_arr, ts_arr, predefined = _deduplicate(
        inter_path, user_arr, item_arr, ts_arr, split_labels, len(item_ids), report
    )

    item_table = _item_table(item_frame, item_ids, columns, report)

    dataset = InteractionDataset(
        name=name,
        user_ids=user_ids,
        item_ids=item_ids,
        user=user_arr,
        item=item_arr,
        timestamp=ts_arr,
        items=item_table,
        users=user_frame,
        predefined_split=predefined,
        report=report.as_dict(),
    )
    dataset.validate()
    log.info("loaded generic dataset", extra={"summary": dataset.summary(), "report": report.as_dict()})
    return dataset
