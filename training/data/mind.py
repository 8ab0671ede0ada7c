"""MIND from the RecLM release: ``items.jsonl``, ``train.tsv``, ``test.tsv`` and the GPT-3.5 item
profiles ``item_profiles_gpt35.jsonl``.

The day-N / day-N+1 split is kept as shipped (no validation part). Items that only appear in the test
file are zero-shot items: only their text is known. The GPT profiles are kept in the item table as
``external_profile`` (empty where none exists) so profile embedding and fusion can be tested on real
LLM text.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from training.data.dataset import InteractionDataset, PredefinedSplit, deduplicate_pairs
from training.data.errors import DataFormatError, IngestReport
from training.data.textio import iter_fields, iter_jsonl, parse_int, require_keys

log = logging.getLogger(__name__)


def _read_pairs(
    path: Path, user_index: dict[str, int], item_index: dict[int, int], report: IngestReport
) -> tuple[np.ndarray, np.ndarray]:
    users: list[int] = []
    items: list[int] = []
    header_seen = False
    for line, (raw_user, raw_item) in iter_fields(path, "\t", 2):
        if not header_seen:
            header_seen = True
            if (raw_user, raw_item) == ("user_id", "item_id"):
                continue
            raise DataFormatError(path, "expected header 'user_id<TAB>item_id'", line)
        report.rows_read += 1
        item_raw = parse_int(path, line, raw_item, "item_id")
        if item_raw not in item_index:
            raise DataFormatError(path, f"unknown item_id {item_raw} (not in items.jsonl)", line)
        parse_int(path, line, raw_user, "user_id")
        if raw_user not in user_index:
            user_index[raw_user] = len(user_index)
        users.append(user_index[raw_user])
        items.append(item_index[item_raw])
    u, i, _, merged = deduplicate_pairs(
        np.asarray(users, np.int32), np.asarray(items, np.int32), np.zeros(len(users), np.int64)
    )
    report.duplicates_merged += merged
    return u, i


def load_mind(folder: str | Path) -> InteractionDataset:
    folder = Path(folder)
    report = IngestReport(source=str(folder))
    items_path = folder / "items.jsonl"
    raw_items: list[int] = []
    rows: dict[str, list[object]] = {"title": [], "categories": [], "description": []}
    for line, record in iter_jsonl(items_path):
        require_keys(items_path, line, record, ("item_id", "category", "subcategory", "title", "abstract"))
        raw_items.append(parse_int(items_path, line, str(record["item_id"]), "item_id"))
        rows["title"].append(str(record["title"]))
        rows["categories"].append([str(record["category"]), str(record["subcategory"])])
        rows["description"].append(str(record["abstract"] or ""))
    if len(set(raw_items)) != len(raw_items):
        raise DataFormatError(items_path, "duplicate item_id values")
    item_index = {raw: idx for idx, raw in enumerate(raw_items)}

    profiles = [""] * len(raw_items)
    prof_path = folder / "item_profiles_gpt35.jsonl"
    if prof_path.exists():
        for line, record in iter_jsonl(prof_path):
            require_keys(prof_path, line, record, ("item_id", "identity", "interests"))
            raw = parse_int(prof_path, line, str(record["item_id"]), "item_id")
            if raw not in item_index:
                raise DataFormatError(prof_path, f"unknown item_id {raw}", line)
            profiles[item_index[raw]] = f"{record['identity']}\n{record['interests']}"

    user_index: dict[str, int] = {}
    train = _read_pairs(folder / "train.tsv", user_index, item_index, report)
    test = _read_pairs(folder / "test.tsv", user_index, item_index, report)
    train_keys = set(zip(train[0].tolist(), train[1].tolist(), strict=True))
    fresh = np.array(
        [(u, i) not in train_keys for u, i in zip(test[0].tolist(), test[1].tolist(), strict=True)],
        dtype=bool,
    )
    if (~fresh).any():
        report.duplicates_merged += int((~fresh).sum())
        report.add_note(f"{int((~fresh).sum())} test pairs already in train kept as train only")
        test = (test[0][fresh], test[1][fresh])
    empty = (np.zeros(0, np.int32), np.zeros(0, np.int32))
    user = np.concatenate([train[0], test[0]])
    item = np.concatenate([train[1], test[1]])
    zero_shot = np.setdiff1d(np.unique(test[1]), np.unique(train[1]))
    report.add_note(f"{len(zero_shot)} test items never appear in train (zero-shot)")
    dataset = InteractionDataset(
        name="mind-reclm",
        user_ids=np.array(list(user_index), dtype=object),
        item_ids=np.array([str(r) for r in raw_items], dtype=object),
        user=user,
        item=item,
        timestamp=np.full(len(user), -1, np.int64),
        items=pd.DataFrame({**rows, "external_profile": profiles}),
        users=None,
        predefined_split=PredefinedSplit(train=train, valid=empty, test=test),
        report=report.as_dict(),
    )
    dataset.validate()
    log.info("loaded mind", extra={"summary": dataset.summary()})
    return dataset
