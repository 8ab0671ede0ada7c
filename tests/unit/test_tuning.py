"""``profilerec-train --tune`` end to end on a small generated dataset imported through
``profilerec-data import``: the study, the best configuration in config.json and the bundle's summary,
the baselines beside it, resuming a finished study and a killed one, the search spaces."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from training.cli import main as train_cli
from training.data.cli import main as data_cli
from training.models import build_model
from training.proex import proex_defaults
from training.profiles import synthetic_profile_inputs
from training.tuning import (
    STORAGE_FILE,
    STUDY_NAME,
    best_trial_file,
    starting_params,
    suggest,
    working_storage,
)

N_USERS, N_ITEMS = 60, 50


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two taste groups of users and items, written as CSV files and imported with profilerec-data."""
    root = tmp_path_factory.mktemp("byod")
    rng = np.random.default_rng(7)
    lines = ["user_id,item_id,rating,timestamp"]
    for u in range(N_USERS):
        group = (u % 2) * (N_ITEMS // 2)
        for i in rng.choice(np.arange(group, group + N_ITEMS // 2), size=12, replace=False):
            lines.append(f"user{u},item{i},5,{1_600_000_000 + u * 100 + int(i)}")
    (root / "ratings.csv").write_text("\n".join(lines) + "\n")
    items = ["item_id,title,categories"] + [
        f"item{i},Item {i},{'a' if i < 25 else 'b'}" for i in range(N_ITEMS)
    ]
    (root / "items.csv").write_text("\n".join(items) + "\n")
    data_cli(
        ["import", "--interactions", str(root / "ratings.csv"), "--items", str(root / "items.csv"),
         "--name", "byod", "--out", str(root / "dataset")]
    )  # fmt: skip
    return root / "dataset"


def _tune(dataset: Path, out: Path, trials: int, *extra: str) -> None:
    train_cli(
        ["--dataset", str(dataset), "--model", "multvae", "--tune", "--trials", str(trials),
         "--epochs", "3", "--eval-every", "1", "--patience", "2", "--threads", "1", "--no-progress",
         "--hp", "batch_size=32", "--out", str(out), *extra]
    )  # fmt: skip


def _trial_states(storage: Path) -> list[str]:
    study = optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{storage}")
    return [t.state.name for t in study.trials]


def test_tune_end_to_end_on_imported_data_then_resume(imported: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    _tune(imported, out, 3)
    captured = capsys.readouterr()
    printed = captured.out
    assert "tuned: 3 trials" in printed and "valid R@20: Mult-VAE " in printed and "| EASE " in printed
    config = json.loads((out / "config.json").read_text())
    tuning = config["tuning"]
    assert tuning["trials"] == 3 and tuning["complete"] + tuning["pruned"] == 3
    best = tuning["best_params"]
    assert best and set(best) <= {"lr", "dropout", "hidden_dim", "latent_dim", "anneal_cap", "anneal_steps"}
    for key, value in best.items():  # the run trained the best configuration
        assert config["hyperparameters"][key] == value
    assert config["hyperparameters"]["batch_size"] == 32  # --hp stays fixed
    assert (out / STORAGE_FILE).exists() and not working_storage(out).exists()
    assert _trial_states(out / STORAGE_FILE).count("RUNNING") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["baselines"]) == {"ease", "itemknn", "mostpop"}
    # the run is the best trial's training, evaluated (not trained a second time)
    assert tuning["best_valid_recall@20"] == pytest.approx(metrics["valid"]["recall@20"], abs=1e-6)
    assert "reusing the finished training" in captured.out + captured.err
    assert (out / "checkpoint.pt").exists() and (out / "epochs.jsonl").read_text().strip()
    assert not best_trial_file(out).exists()

    from training.export import load_run_context

    summary = load_run_context(out).summary  # what the bundle's manifest records under `training`
    assert (
        summary["tuning"]["best_params"] == best and summary["hyperparameters"] == config["hyperparameters"]
    )
    assert (
        summary["baselines"]["ease"]["valid_recall@20"] == metrics["baselines"]["ease"]["valid"]["recall@20"]
    )

    first = optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{out / STORAGE_FILE}").trials[0]
    assert first.params == starting_params("multvae", {"batch_size": 32}, None)  # starts from the defaults
    assert tuning["best_valid_recall@20"] >= (first.value or 0.0)

    _tune(imported, out, 5)  # a rerun continues the study: two more trials, not five
    assert len(_trial_states(out / STORAGE_FILE)) == 5
    assert json.loads((out / "config.json").read_text())["tuning"]["trials"] == 5


def test_a_killed_search_resumes_and_retries_the_interrupted_trial(imported: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    storage = working_storage(out)
    study = optuna.create_study(study_name=STUDY_NAME, storage=f"sqlite:///{storage}", direction="maximize")
    done = study.ask({"lr": optuna.distributions.FloatDistribution(3e-4, 1e-2, log=True)})
    study.tell(done, 0.01)
    killed = study.ask()  # what a killed process leaves: a RUNNING trial
    killed.suggest_float("lr", 3e-4, 1e-2, log=True)
    killed_lr = killed.params["lr"]
    _tune(imported, out, 2)
    study = optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{out / STORAGE_FILE}")
    states = [t.state for t in study.trials]
    assert states[1] == TrialState.FAIL and TrialState.RUNNING not in states
    assert len([s for s in states if s in (TrialState.COMPLETE, TrialState.PRUNED)]) == 2
    assert study.trials[2].params["lr"] == pytest.approx(killed_lr)  # the interrupted trial ran again
    assert not storage.exists()


def test_a_study_of_another_run_is_refused(imported: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    _tune(imported, out, 1)
    config = json.loads((out / "config.json").read_text())
    with sqlite3.connect(out / STORAGE_FILE) as db:  # pretend it was made on another split
        raw = db.execute("SELECT value_json FROM study_user_attributes WHERE key='identity'").fetchone()[0]
        db.execute(
            "UPDATE study_user_attributes SET value_json=? WHERE key='identity'",
            (raw.replace(config["split_fingerprint"], "0" * 16),),
        )
    with pytest.raises(SystemExit, match="another run"):
        _tune(imported, out, 2)


@pytest.mark.parametrize("model", ["lightgcn", "multvae"])
@pytest.mark.parametrize("fused", [False, True])
def test_every_search_space_builds_a_model(model: str, fused: bool, imported: Path) -> None:
    from training.data import load_dataset, split_dataset

    split = split_dataset(load_dataset(str(imported)), "random", seed=1)
    proex = proex_defaults(model, n_profiles=2, lambda_var=0.5) if fused else None
    profiles = synthetic_profile_inputs(split.n_users, split.n_items, 2, 8, seed=0) if fused else None
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    hp, tuned = suggest(trial, model, {"batch_size": 16}, proex, frozenset({"lambda_var"}))
    assert hp["batch_size"] == 16 and "lr" in hp
    if fused:
        assert tuned is not None and tuned.lambda_var == 0.5 and "lambda_var" not in trial.params
        assert "lambda_align" in trial.params and "mapping_hidden" in trial.params
    built = build_model(model, split.train, hp, tuned, profiles)
    assert built.uses_profiles == fused


def test_the_search_starts_from_the_configuration_the_run_would_use() -> None:
    assert starting_params("lightgcn", {}, None) == {
        "lr": 1e-3,
        "l2": 1e-6,
        "embedding_dim": 32,
        "n_layers": 3,
    }
    assert "lr" not in starting_params("lightgcn", {"lr": 0.004}, None)  # a given --hp is not searched
    start = starting_params("lightgcn", {}, proex_defaults("lightgcn"), frozenset({"lambda_var"}))
    assert start["lambda_reg"] == 0.01 and start["mapping_hidden"] == 128
    assert "lambda_align" not in start  # 0.0 is outside the searched (log) range: left to the sampler
    assert "lambda_var" not in start  # fixed on the command line
    replayed, proex = suggest(
        optuna.trial.FixedTrial(start | {"lambda_align": 0.01}),
        "lightgcn",
        {},
        proex_defaults("lightgcn"),
        frozenset({"lambda_var"}),
    )
    assert replayed["lr"] == 1e-3 and proex is not None and proex.mapping_hidden == 128


def test_pruning_starts_after_two_complete_trials_and_the_warmup_epochs(tmp_path: Path) -> None:
    """An hour's budget on a large dataset holds a handful of trials: a trial trailing the two complete
    ones is stopped at a checkpoint past the warm-up, not only after five trials."""
    from training.tuning import TuneOptions, _open_study

    study = _open_study(tmp_path / "s.sqlite3", {"model": "x"}, TuneOptions(), 0)
    for _ in range(2):
        done = study.ask()
        for step in (9, 30):
            done.report(0.3, step)
        study.tell(done, 0.3)
    trailing = study.ask()
    trailing.report(0.1, 9)
    assert not trailing.should_prune()  # within the warm-up epochs
    trailing.report(0.1, 30)
    assert trailing.should_prune()


def test_the_run_reuses_only_the_best_trials_own_training(tmp_path: Path) -> None:
    """A saved training of another trial, other parameters or other training settings is not reused."""
    from types import SimpleNamespace

    import scipy.sparse as sp

    from training.models import TrainConfig
    from training.models.base import FitResult
    from training.runs import save_trained
    from training.tuning import _train_key, _trained_by

    matrix = sp.csr_matrix(np.eye(6, 5, dtype=np.float32))
    model = build_model("multvae", matrix, {"hidden_dim": 8, "latent_dim": 4}, None, None)
    fit = FitResult(1, {"recall@20": 0.1}, 1, 0.1, 0.1, 0.0, 0.1, [{"epoch": 1}])
    train = TrainConfig(epochs=3, seed=7)
    path = tmp_path / ".run.best-trial.pt"
    save_trained(model, fit, path, trial=2, params={"lr": 0.01}, train=_train_key(train))
    best = SimpleNamespace(number=2, params={"lr": 0.01})
    assert _trained_by(best, path, TrainConfig(epochs=3, seed=7, progress=False)) == path  # bars: same run
    assert _trained_by(SimpleNamespace(number=3, params={"lr": 0.01}), path, train) is None
    assert _trained_by(SimpleNamespace(number=2, params={"lr": 0.02}), path, train) is None
    assert _trained_by(best, path, TrainConfig(epochs=4, seed=7)) is None
    assert _trained_by(best, tmp_path / "missing.pt", train) is None
