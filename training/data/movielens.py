"""MovieLens-100k from the unchanged GroupLens files.

``u.data``: user, item, rating, unix time (tab separated). ``u.item``: id | title | release date |
video date | url | 19 genre flags, latin-1. ``u.user``: id | age | gender | occupation | zip.
``u.genre``: name | index. Every rating is an implicit positive unless ``min_rating`` says otherwise.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from training.data.dataset import InteractionDataset, deduplicate_pairs
from training.data.errors import DataFormatError, IngestReport
from training.data.textio import iter_fields, parse_int, require_file

log = logging.getLogger(__name__)

N_GENRES = 19


def _read_genres(path: Path) -> list[str]:
    genres: dict[int, str] = {}
    for line, (name, idx) in iter_fields(path, "|", 2, encoding="latin-1"):
        genres[parse_int(path, line, idx, "genre index")] = name
    if sorted(genres) != list(range(len(genres))):
        raise DataFormatError(path, f"genre indices are not 0..{len(genres) - 1}")
    return [genres[i] for i in range(len(genres))]


def load_movielens_100k(folder: str | Path, min_rating: float = 0.0) -> InteractionDataset:
    folder = Path(folder)
    report = IngestReport(source=str(folder))
    genre_path = folder / "u.genre"
    genres = _read_genres(genre_path) if genre_path.exists() else [f"genre_{i}" for i in range(N_GENRES)]
    if len(genres) != N_GENRES:
        raise DataFormatError(genre_path, f"expected {N_GENRES} genres, found {len(genres)}")

    # Items first: interactions must reference known items.
    item_path = require_file(folder / "u.item")
    raw_items: list[int] = []
    titles: list[str] = []
    categories: list[list[str]] = []
    release: list[str] = []
    for line, fields in iter_fields(item_path, "|", 5 + N_GENRES, encoding="latin-1"):
        raw = parse_int(item_path, line, fields[0], "item id")
        flags = fields[5:]
        if any(f not in ("0", "1") for f in flags):
            raise DataFormatError(item_path, "genre flags must be 0 or 1", line)
        raw_items.append(raw)
        titles.append(fields[1].strip())
        categories.append([g for g, f in zip(genres, flags, strict=True) if f == "1" and g != "unknown"])
        release.append(fields[2].strip())
    if len(set(raw_items)) != len(raw_items):
        raise DataFormatError(item_path, "duplicate item ids")
    item_index = {raw: idx for idx, raw in enumerate(raw_items)}

    user_path = require_file(folder / "u.user")
    raw_users: list[int] = []
    attrs: dict[str, list[object]] = {"age": [], "gender": [], "occupation": [], "zip_code": []}
    for line, fields in iter_fields(user_path, "|", 5, encoding="latin-1"):
        raw_users.append(parse_int(user_path, line, fields[0], "user id"))
        attrs["age"].append(parse_int(user_path, line, fields[1], "age"))
        if fields[2] not in ("M", "F"):
            raise DataFormatError(user_path, f"gender must be M or F, got {fields[2]!r}", line)
        attrs["gender"].append(fields[2])
        attrs["occupation"].append(fields[3])
        attrs["zip_code"].append(fields[4])
    if len(set(raw_users)) != len(raw_users):
        raise DataFormatError(user_path, "duplicate user ids")
    user_index = {raw: idx for idx, raw in enumerate(raw_users)}

    data_path = require_file(folder / "u.data")
    users: list[int] = []
    items: list[int] = []
    stamps: list[int] = []
    below = 0
    for line, fields in iter_fields(data_path, "\t", 4):
        report.rows_read += 1
        u = parse_int(data_path, line, fields[0], "user id")
        i = parse_int(data_path, line, fields[1], "item id")
        rating = parse_int(data_path, line, fields[2], "rating")
        ts = parse_int(data_path, line, fields[3], "timestamp")
        if u not in user_index:
            raise DataFormatError(data_path, f"unknown user id {u} (not in u.user)", line)
        if i not in item_index:
            raise DataFormatError(data_path, f"unknown item id {i} (not in u.item)", line)
        if rating < min_rating:
            below += 1
            continue
        users.append(user_index[u])
        items.append(item_index[i])
        stamps.append(ts)
    if below:
        report.add_note(f"{below} ratings below min_rating={min_rating} not used as positives")
    user_arr, item_arr, ts_arr, merged = deduplicate_pairs(
        np.asarray(users, dtype=np.int32),
        np.asarray(items, dtype=np.int32),
        np.asarray(stamps, dtype=np.int64),
    )
    report.duplicates_merged = merged

    dataset = InteractionDataset(
        name="movielens-100k",
        user_ids=np.array([str(u) for u in raw_users], dtype=object),
        item_ids=np.array([str(i) for i in raw_items], dtype=object),
        user=user_arr,
        item=item_arr,
        timestamp=ts_arr,
        items=pd.DataFrame(
            {
                "title": titles,
                "categories": categories,
                "description": [""] * len(titles),
                "release_date": release,
            }
        ),
        users=pd.DataFrame(attrs),
        report=report.as_dict(),
    )
    dataset.validate()
    log.info("loaded movielens-100k", extra={"summary": dataset.summary(), "report": report.as_dict()})
    return dataset
