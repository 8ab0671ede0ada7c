"""``profilerec-data import`` reads files as they come: MovieLens ``ratings.csv`` / ``movies.csv`` in the
ml-latest-small layout import with column flags only, no editing of the files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.data import ColumnNames, DataFormatError, InteractionDataset, load_generic
from training.data.cli import main

ML_FLAGS = [
    "--user-col", "userId", "--item-col", "movieId", "--rating-col", "rating", "--time-col", "timestamp",
    "--item-id-col", "movieId", "--title-col", "title", "--categories-col", "genres", "--categories-sep", "|",
]  # fmt: skip


def ml_latest_small(folder: Path) -> tuple[Path, Path]:
    """A tiny pair of files in the ml-latest-small layout (header names, quoting, genre separator)."""
    ratings = folder / "ratings.csv"
    ratings.write_text(
        "userId,movieId,rating,timestamp\n"
        "1,1,4.0,964982703\n"
        "1,3,4.0,964981247\n"
        "1,6,4.0,964982224\n"
        "2,1,3.5,1445714835\n"
        "2,6,5.0,1445714952\n"
        "3,3,0.5,1306463578\n"
        "3,1,4.5,1306463590\n"
    )
    movies = folder / "movies.csv"
    movies.write_text(
        "movieId,title,genres\n"
        "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
        '3,"American President, The (1995)",Comedy|Drama|Romance\n'
        "6,Heat (1995),Action|Crime|Thriller\n"
        "7,Sabrina (1995),Comedy|Romance\n"
    )
    return ratings, movies


def test_movielens_latest_small_imports_with_flags_only(tmp_path: Path, capsys) -> None:
    ratings, movies = ml_latest_small(tmp_path)
    before = (ratings.read_bytes(), movies.read_bytes())
    out = tmp_path / "ds"
    main(["import", "--interactions", str(ratings), "--items", str(movies), *ML_FLAGS, "--min-rating", "4",
          "--name", "ml-latest-small", "--out", str(out)])  # fmt: skip
    assert (ratings.read_bytes(), movies.read_bytes()) == before  # nothing edited
    printed = json.loads(capsys.readouterr().out)
    assert printed["summary"]["has_timestamps"] is True

    ds = InteractionDataset.load(out)
    assert ds.name == "ml-latest-small"
    assert sorted(ds.item_ids.tolist()) == ["1", "3", "6", "7"]  # the catalogue, incl. the unrated 7
    assert ds.n_users == 3 and ds.n_interactions == 5  # the 3.5 and the 0.5 are not positives
    titles = dict(zip(ds.item_ids.tolist(), ds.items["title"], strict=True))
    assert titles["3"] == "American President, The (1995)"
    genres = dict(zip(ds.item_ids.tolist(), ds.items["categories"], strict=True))
    assert list(genres["6"]) == ["Action", "Crime", "Thriller"]
    user1 = ds.user_index()["1"]
    assert sorted(ds.timestamp[ds.user == user1].tolist()) == [964981247, 964982224, 964982703]
    assert any("below min_rating=4.0" in note for note in ds.report["notes"])


def test_a_named_column_that_is_missing_fails_clearly(tmp_path: Path, capsys) -> None:
    ratings, _ = ml_latest_small(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["import", "--interactions", str(ratings), "--user-col", "userid", "--item-col", "movieId",
              "--out", str(tmp_path / "ds")])  # fmt: skip
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "missing column(s) userid" in err and "found userId, movieId, rating, timestamp" in err
    # an optional column named explicitly must exist too (a typo is not silently "no timestamps")
    with pytest.raises(DataFormatError, match=r"missing column\(s\) time"):
        load_generic(ratings, columns=ColumnNames(user="userId", item="movieId", timestamp="time"))


def test_other_separator_and_a_clashing_canonical_column(tmp_path: Path) -> None:
    inter = tmp_path / "i.csv"
    inter.write_text("uid,iid\na,x\nb,y\n")
    items = tmp_path / "items.csv"
    items.write_text("iid,name,tags\nx,X,one;two\ny,Y,three\n")
    cols = ColumnNames(
        user="uid", item="iid", item_id="iid", title="name", categories="tags", categories_sep=";"
    )
    ds = load_generic(inter, items, columns=cols)
    assert [list(c) for c in ds.items["categories"]] == [["one", "two"], ["three"]]
    assert list(ds.items["title"]) == ["X", "Y"]
    inter.write_text("uid,user_id,iid\na,z,x\n")
    with pytest.raises(DataFormatError, match="column 'uid' is read as 'user_id' but the file also has"):
        load_generic(inter, columns=cols)
