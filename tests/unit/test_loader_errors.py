"""Every loader rejects a malformed file with a message naming the file (and line where there is one)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from training.data import DataFormatError, load_generic, load_mind, load_movielens_100k, load_rlmrec_split


@pytest.fixture
def ml_copy(tmp_path: Path, data_dir: Path) -> Path:
    target = tmp_path / "ml"
    shutil.copytree(data_dir / "movielens-100k", target)
    for f in target.iterdir():
        f.chmod(0o644)
    return target


def _rewrite_line(path: Path, line_no: int, new: bytes) -> None:
    lines = path.read_bytes().split(b"\n")
    lines[line_no - 1] = new
    path.write_bytes(b"\n".join(lines))


def test_movielens_wrong_field_count(ml_copy: Path) -> None:
    _rewrite_line(ml_copy / "u.data", 17, b"1\t2\t3")
    with pytest.raises(DataFormatError, match=r"u\.data:17: expected 4 fields") as err:
        load_movielens_100k(ml_copy)
    assert err.value.line == 17


def test_movielens_unknown_item(ml_copy: Path) -> None:
    _rewrite_line(ml_copy / "u.data", 3, b"1\t99999\t3\t881250949")
    with pytest.raises(DataFormatError, match=r"u\.data:3: unknown item id 99999"):
        load_movielens_100k(ml_copy)


def test_movielens_non_integer(ml_copy: Path) -> None:
    _rewrite_line(ml_copy / "u.data", 5, b"1\tabc\t3\t881250949")
    with pytest.raises(DataFormatError, match=r"u\.data:5: item id is not an integer"):
        load_movielens_100k(ml_copy)


def test_movielens_empty_file(ml_copy: Path) -> None:
    (ml_copy / "u.user").write_bytes(b"")
    with pytest.raises(DataFormatError, match=r"u\.user: file is empty"):
        load_movielens_100k(ml_copy)


def test_movielens_bad_genre_flags(ml_copy: Path) -> None:
    raw = (ml_copy / "u.item").read_bytes().split(b"\n")
    raw[9] = raw[9][:-1] + b"7"
    (ml_copy / "u.item").write_bytes(b"\n".join(raw))
    with pytest.raises(DataFormatError, match=r"u\.item:10: genre flags"):
        load_movielens_100k(ml_copy)


def test_movielens_reads_latin1_titles(ml_copy: Path) -> None:
    raw = (ml_copy / "u.item").read_bytes().split(b"\n")
    raw[0] = raw[0].replace(b"Toy Story", b"Les Mis\xe9rables")
    (ml_copy / "u.item").write_bytes(b"\n".join(raw))
    dataset = load_movielens_100k(ml_copy)
    assert dataset.items["title"][0] == "Les Misérables (1995)"


def test_movielens_shape(movielens) -> None:
    assert movielens.n_users == 943 and movielens.n_items == 1682 and movielens.n_interactions == 100_000
    assert movielens.items["categories"][0] == ["Animation", "Children's", "Comedy"]
    assert movielens.users is not None and list(movielens.users.columns) == [
        "age",
        "gender",
        "occupation",
        "zip_code",
    ]


def test_rlmrec_not_an_npz(tmp_path: Path, data_dir: Path) -> None:
    target = tmp_path / "rl"
    shutil.copytree(data_dir / "rlmrec-amazon-book", target)
    (target / "val_mat.npz").chmod(0o644)
    (target / "val_mat.npz").write_bytes(b"not a zip file")
    with pytest.raises(DataFormatError, match=r"val_mat\.npz: not a scipy\.sparse"):
        load_rlmrec_split(target)


def test_rlmrec_overlapping_parts(tmp_path: Path) -> None:
    m = sp.csr_matrix(np.eye(3, dtype=np.float32))
    for part in ("trn", "val", "tst"):
        sp.save_npz(tmp_path / f"{part}_mat.npz", m)
    with pytest.raises(DataFormatError, match=r"val_mat\.npz: 3 interactions also in an earlier part"):
        load_rlmrec_split(tmp_path)


def test_rlmrec_bad_id_map(tmp_path: Path) -> None:
    m = sp.csr_matrix(np.eye(2, dtype=np.float32))
    sp.save_npz(tmp_path / "trn_mat.npz", m)
    sp.save_npz(tmp_path / "val_mat.npz", sp.csr_matrix((2, 2), dtype=np.float32))
    sp.save_npz(tmp_path / "tst_mat.npz", sp.csr_matrix((2, 2), dtype=np.float32))
    (tmp_path / "amazon_user.json").write_text(
        '{"uid": 0, "reviewerID": "A"}\n{"uid": 0, "reviewerID": "B"}\n'
    )
    with pytest.raises(DataFormatError, match=r"amazon_user\.json:2: duplicate uid 0"):
        load_rlmrec_split(tmp_path)


def _mind_files(folder: Path) -> None:
    items = [
        {"item_id": i, "category": "news", "subcategory": "us", "title": f"T{i}", "abstract": "a"}
        for i in range(3)
    ]
    (folder / "items.jsonl").write_text("\n".join(json.dumps(r) for r in items) + "\n")
    (folder / "train.tsv").write_text("user_id\titem_id\n0\t0\n0\t1\n1\t1\n")
    (folder / "test.tsv").write_text("user_id\titem_id\n0\t2\n1\t2\n")


def test_mind_ok_and_zero_shot(tmp_path: Path) -> None:
    _mind_files(tmp_path)
    ds = load_mind(tmp_path)
    assert ds.n_items == 3 and ds.n_users == 2
    assert any("zero-shot" in note for note in ds.report["notes"])


def test_mind_unknown_item(tmp_path: Path) -> None:
    _mind_files(tmp_path)
    (tmp_path / "test.tsv").write_text("user_id\titem_id\n0\t2\n1\t42\n")
    with pytest.raises(DataFormatError, match=r"test\.tsv:3: unknown item_id 42"):
        load_mind(tmp_path)


def test_mind_bad_json(tmp_path: Path) -> None:
    _mind_files(tmp_path)
    with (tmp_path / "items.jsonl").open("a") as fh:
        fh.write('{"item_id": 3, "title": \n')
    with pytest.raises(DataFormatError, match=r"items\.jsonl:4: invalid JSON"):
        load_mind(tmp_path)


def test_mind_missing_key(tmp_path: Path) -> None:
    _mind_files(tmp_path)
    with (tmp_path / "items.jsonl").open("a") as fh:
        fh.write('{"item_id": 3, "title": "x"}\n')
    with pytest.raises(
        DataFormatError, match=r"items\.jsonl:4: missing key\(s\) category, subcategory, abstract"
    ):
        load_mind(tmp_path)


def _generic(folder: Path) -> tuple[Path, Path]:
    inter = folder / "ratings.csv"
    inter.write_text(
        "user_id,item_id,timestamp\nalice,m1,100\nalice,m2,2020-01-02T00:00:00\nbob,m1,50\nbob,m1,40\n"
    )
    items = folder / "items.csv"
    items.write_text(
        "item_id,title,categories,description\nm1,Heat,Crime|Thriller,A heist\nm2,Up,Animation,Balloons\n"
    )
    return inter, items


def test_generic_ok_counts_duplicates(tmp_path: Path) -> None:
    inter, items = _generic(tmp_path)
    ds = load_generic(inter, items)
    assert ds.n_users == 2 and ds.n_items == 2 and ds.n_interactions == 3
    assert ds.report["duplicates_merged"] == 1
    assert ds.items["categories"][0] == ["Crime", "Thriller"]
    bob_m1 = ds.timestamp[(ds.user == ds.user_index()["bob"]) & (ds.item == 0)]
    assert bob_m1.tolist() == [40]  # earliest kept


def test_generic_missing_column(tmp_path: Path) -> None:
    inter = tmp_path / "r.csv"
    inter.write_text("user,item_id\na,b\n")
    with pytest.raises(DataFormatError, match=r"r\.csv: missing column\(s\) user_id"):
        load_generic(inter)


def test_generic_unknown_item_error_and_drop(tmp_path: Path) -> None:
    inter, items = _generic(tmp_path)
    with inter.open("a") as fh:
        fh.write("carol,m9,10\n")
    with pytest.raises(DataFormatError, match=r"ratings\.csv:6: item_id 'm9' is not in items\.csv"):
        load_generic(inter, items)
    ds = load_generic(inter, items, unknown_items="drop")
    assert ds.report["unknown_ids_dropped"] == 1


def test_generic_wrong_encoding(tmp_path: Path) -> None:
    inter = tmp_path / "r.csv"
    inter.write_bytes("user_id,item_id\na,b\nc,Mis\xe9rables\n".encode("latin-1"))
    with pytest.raises(DataFormatError, match=r"r\.csv:3: not valid utf-8"):
        load_generic(inter)


def test_generic_empty_file(tmp_path: Path) -> None:
    inter = tmp_path / "r.jsonl"
    inter.write_text("")
    with pytest.raises(DataFormatError, match=r"r\.jsonl: file is empty"):
        load_generic(inter)


def test_generic_bad_timestamp(tmp_path: Path) -> None:
    inter = tmp_path / "r.csv"
    inter.write_text("user_id,item_id,timestamp\na,b,1\na,c,yesterday\n")
    with pytest.raises(DataFormatError, match=r"r\.csv:3: timestamp 'yesterday'"):
        load_generic(inter)


def test_generic_empty_id(tmp_path: Path) -> None:
    inter = tmp_path / "r.jsonl"
    inter.write_text('{"user_id": "a", "item_id": "x"}\n{"user_id": "", "item_id": "y"}\n')
    with pytest.raises(DataFormatError, match=r"r\.jsonl:2: empty user_id"):
        load_generic(inter)


def test_generic_parquet_and_split_column(tmp_path: Path) -> None:
    import pandas as pd

    path = tmp_path / "r.parquet"
    pd.DataFrame(
        {
            "user_id": ["a", "a", "a", "b"],
            "item_id": ["x", "y", "z", "x"],
            "split": ["train", "valid", "test", "train"],
        }
    ).to_parquet(path)
    ds = load_generic(path)
    assert ds.predefined_split is not None
    assert len(ds.predefined_split.test[0]) == 1


def test_generic_bad_split_label(tmp_path: Path) -> None:
    inter = tmp_path / "r.csv"
    inter.write_text("user_id,item_id,split\na,x,train\na,y,holdout\n")
    with pytest.raises(DataFormatError, match=r"r\.csv:3: split must be one of"):
        load_generic(inter)
