"""The RLMRec/ProEx Amazon-Book split: ``trn_mat.npz``, ``val_mat.npz``, ``tst_mat.npz`` (scipy CSR),
``amazon_user.json`` and ``amazon_item.json`` (JSON lines mapping matrix index to raw id).

The split is kept exactly as shipped. There is no item text beyond the raw ASIN.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from training.data.dataset import InteractionDataset, PredefinedSplit
from training.data.errors import DataFormatError, IngestReport
from training.data.textio import iter_jsonl, parse_int, require_file, require_keys

log = logging.getLogger(__name__)


def _load_matrix(path: Path) -> sp.csr_matrix:
    require_file(path)
    try:
        matrix = sp.load_npz(path)
    except (ValueError, OSError, KeyError, zipfile.BadZipFile) as exc:
        raise DataFormatError(path, f"not a scipy.sparse .npz matrix ({exc})") from exc
    return sp.csr_matrix(matrix)


def _load_id_map(path: Path, index_key: str, raw_key: str, expected: int) -> np.ndarray:
    raw_ids: list[str | None] = [None] * expected
    for line, record in iter_jsonl(path):
        require_keys(path, line, record, (index_key, raw_key))
        idx = parse_int(path, line, str(record[index_key]), index_key)
        if not 0 <= idx < expected:
            raise DataFormatError(path, f"{index_key} {idx} outside 0..{expected - 1}", line)
        if raw_ids[idx] is not None:
            raise DataFormatError(path, f"duplicate {index_key} {idx}", line)
        raw_ids[idx] = str(record[raw_key])
    missing = [i for i, v in enumerate(raw_ids) if v is None]
    if missing:
        raise DataFormatError(path, f"{len(missing)} indices have no raw id (first: {missing[0]})")
    return np.array(raw_ids, dtype=object)


def load_rlmrec_split(folder: str | Path, name: str = "rlmrec-amazon-book") -> InteractionDataset:
    folder = Path(folder)
    report = IngestReport(source=str(folder))
    mats = {part: _load_matrix(folder / f"{part}_mat.npz") for part in ("trn", "val", "tst")}
    shape = mats["trn"].shape
    for part, mat in mats.items():
        if mat.shape != shape:
            raise DataFormatError(
                folder / f"{part}_mat.npz", f"shape {mat.shape} differs from trn_mat {shape}"
            )
    n_users, n_items = shape
    pairs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    seen: sp.csr_matrix | None = None
    for part, mat in mats.items():
        coo = mat.tocoo()
        coo.sum_duplicates()
        keep = coo.data > 0
        dropped = int((~keep).sum())
        if dropped:
            report.add_note(f"{part}_mat: {dropped} explicit zero entries are not interactions")
        u, i = coo.row[keep].astype(np.int32), coo.col[keep].astype(np.int32)
        order = np.lexsort((i, u))
        pairs[part] = (u[order], i[order])
        binary = sp.csr_matrix((np.ones(len(u), np.float32), (u, i)), shape=shape)
        if seen is not None:
            overlap = int(seen.multiply(binary).nnz)
            if overlap:
                raise DataFormatError(
                    folder / f"{part}_mat.npz", f"{overlap} interactions also in an earlier part"
                )
            seen = seen + binary
        else:
            seen = binary
        report.rows_read += len(u)

    user_json = folder / "amazon_user.json"
    item_json = folder / "amazon_item.json"
    user_ids = (
        _load_id_map(user_json, "uid", "reviewerID", n_users)
        if user_json.exists()
        else np.array([str(u) for u in range(n_users)], dtype=object)
    )
    item_ids = (
        _load_id_map(item_json, "iid", "asin", n_items)
        if item_json.exists()
        else np.array([str(i) for i in range(n_items)], dtype=object)
    )

    user = np.concatenate([pairs[p][0] for p in ("trn", "val", "tst")])
    item = np.concatenate([pairs[p][1] for p in ("trn", "val", "tst")])
    dataset = InteractionDataset(
        name=name,
        user_ids=user_ids,
        item_ids=item_ids,
        user=user,
        item=item,
        timestamp=np.full(len(user), -1, dtype=np.int64),
        items=pd.DataFrame(
            {
                "title": list(item_ids),
                "categories": [[] for _ in range(n_items)],
                "description": [""] * n_items,
            }
        ),
        users=None,
        predefined_split=PredefinedSplit(train=pairs["trn"], valid=pairs["val"], test=pairs["tst"]),
        report=report.as_dict(),
    )
    dataset.validate()
    log.info("loaded rlmrec split", extra={"summary": dataset.summary()})
    return dataset
