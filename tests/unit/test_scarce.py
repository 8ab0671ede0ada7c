"""The scarce-data variants (training.data.scarce) are seeded, disjoint where they must be, and the
sparsity table says where ProEx stops helping (benchmarks.sparsity)."""

from __future__ import annotations

import math

import pytest

from benchmarks.sparsity import Cell, stops_helping, table
from tests.unit.test_split import toy_dataset
from training.data.scarce import hold_out_items, subsample_train
from training.data.split import split_dataset


def _pairs(matrix) -> set[tuple[int, int]]:
    coo = matrix.tocoo()
    return set(zip(coo.row.tolist(), coo.col.tolist(), strict=True))


def test_subsample_keeps_a_seeded_share_of_each_users_training_items() -> None:
    split = split_dataset(toy_dataset([40, 20, 10, 3, 2]), "random", seed=1)
    a = subsample_train(split, 0.25, seed=5)
    assert _pairs(a.train) == _pairs(subsample_train(split, 0.25, seed=5).train)  # seeded
    assert _pairs(a.train) != _pairs(subsample_train(split, 0.25, seed=6).train)
    assert _pairs(a.train) <= _pairs(split.train)
    for user in range(split.n_users):
        n = split.train[user].nnz
        assert a.train[user].nnz == max(1, math.ceil(0.25 * n))  # at least one each
    assert _pairs(a.valid) == _pairs(split.valid) and _pairs(a.test) == _pairs(split.test)
    assert a.params["train_fraction"] == 0.25 and a.params["subsample_seed"] == 5
    assert a.fingerprint() != split.fingerprint()
    assert subsample_train(split, 1.0, seed=5) is split
    with pytest.raises(ValueError):
        subsample_train(split, 0.0, seed=5)


def test_hold_out_items_removes_them_entirely_and_is_seeded() -> None:
    ds = toy_dataset([10, 8, 6, 5, 9])
    held = hold_out_items(ds, 0.2, seed=3)
    again = hold_out_items(ds, 0.2, seed=3)
    assert held.item_ids == again.item_ids
    assert held.item_ids != hold_out_items(ds, 0.2, seed=4).item_ids
    assert len(held.item_ids) == round(0.2 * ds.n_items)
    kept_ids = {str(i) for i in held.kept.item_ids}
    assert kept_ids.isdisjoint(held.item_ids)  # disjoint catalogues
    assert kept_ids | set(held.item_ids) == {str(i) for i in ds.item_ids}
    # every interaction is either in the remaining catalogue or in the held-out truth, once
    assert held.kept.n_interactions + len(held.user) == ds.n_interactions
    original = {(int(u), str(ds.item_ids[i])) for u, i in zip(ds.user, ds.item, strict=True)}
    kept_pairs = {
        (int(u), str(held.kept.item_ids[i])) for u, i in zip(held.kept.user, held.kept.item, strict=True)
    }
    held_pairs = {(int(u), held.item_ids[i]) for u, i in zip(held.user, held.item, strict=True)}
    assert kept_pairs | held_pairs == original and not kept_pairs & held_pairs
    assert list(held.kept.items["title"]) == [f"t{i}" for i in held.kept_items]
    truth = held.truth()
    assert truth.shape == (ds.n_users, len(held.item_ids)) and truth.nnz == len(held_pairs)
    assert held.kept.n_users == ds.n_users


def _result(r20: float) -> dict:
    return {"metrics": {"test": {"recall@20": r20, "ndcg@20": r20}, "baselines": {}}}


def test_the_table_says_where_proex_stops_helping() -> None:
    seeds = [1, 2]
    figures = {  # fraction -> (base, proex) R@20 per seed
        0.1: ((0.10, 0.11), (0.12, 0.12)),
        0.5: ((0.20, 0.20), (0.21, 0.19)),  # mean gain 0: does not help
        1.0: ((0.30, 0.30), (0.29, 0.30)),
    }
    results = {}
    for fraction, (base, proex) in figures.items():
        for seed, b, p in zip(seeds, base, proex, strict=True):
            results[Cell("multvae", "base", fraction, seed)] = _result(b)
            results[Cell("multvae", "proex", fraction, seed)] = _result(p)
    rows, verdicts, missing = table(results, seeds, fractions=(0.1, 0.5, 1.0), models=("multvae",))
    assert [r["fraction"] for r in rows] == ["10%", "50%", "100%"]
    assert rows[0]["gain_R@20_%"] > 0 and rows[0]["seeds_gaining"] == "2/2"
    assert rows[0]["strongest_non_profile"] == "multvae base"
    assert verdicts["multvae"] == "stops helping at 50% (helps at 10%)"
    assert missing == []
    del results[Cell("multvae", "proex", 1.0, 2)]
    rows, verdicts, missing = table(results, seeds, fractions=(0.1, 0.5, 1.0), models=("multvae",))
    assert missing == ["multvae proex 100% seed 2"] and rows[-1]["seeds"] == 1
    assert stops_helping({0.1: True, 1.0: True}, (0.1, 1.0)).startswith("helps at every")
    assert stops_helping({0.1: False, 1.0: False}, (0.1, 1.0)).startswith("helps at no")
    mixed = stops_helping({0.1: True, 0.5: False, 1.0: True}, (0.1, 0.5, 1.0))
    assert mixed == "helps at 10%, 100%, not at 50% (no single turning point)"
    assert stops_helping({}, (0.1,)) == "not measured"


def test_a_run_trains_on_its_subsample_says_so_and_is_reused_only_for_it(tmp_path) -> None:
    import json
    from dataclasses import replace

    from benchmarks.sparsity import finished
    from training.data.split import Split
    from training.models import TrainConfig
    from training.runs import RunSpec, execute_run

    dataset = toy_dataset([50, 45, 48, 42, 50, 44, 46, 49])  # K=40 needs 40 items
    dataset.save(tmp_path / "toy")
    spec = RunSpec(
        dataset=str(tmp_path / "toy"),
        model="multvae",
        train=TrainConfig(epochs=1, eval_every=1, patience=1, seed=3, progress=False),
        out=str(tmp_path / "run"),
        baselines=None,
        train_fraction=0.5,
        subsample_seed=3,
    )
    execute_run(spec)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["train_fraction"] == 0.5 and config["subsample_seed"] == 3
    saved = Split.load(tmp_path / "run" / "split")
    full = split_dataset(dataset, "random", seed=spec.split_seed)
    assert _pairs(saved.train) == _pairs(subsample_train(full, 0.5, seed=3).train)
    assert _pairs(saved.test) == _pairs(full.test) and _pairs(saved.valid) == _pairs(full.valid)
    assert finished(spec) is not None  # resumable: the finished run is found ...
    assert finished(replace(spec, train_fraction=0.25)) is None  # ... only for its own fraction
    assert finished(replace(spec, subsample_seed=4)) is None
