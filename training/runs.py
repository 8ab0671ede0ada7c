"""Training runs: one folder per run, published whole when the run has finished, and reloadable.

A run folder holds

* ``config.json`` - model kind and hyperparameters, ProEx config, dataset name and fingerprint, split
  method/seed/fingerprint, profile store (path, version, embedding model, K, d_s, fingerprint), the
  training config and the seed;
* ``split/`` - the split the model was trained on (``Split.save``), so the run reloads without the
  dataset;
* ``checkpoint.pt`` - the best state dict (profile vectors included as buffers for ProEx models);
* ``epochs.jsonl`` - one line per epoch: loss parts, validation Recall@20 when evaluated, seconds;
* ``metrics.json`` - final validation and test metrics at K = 10, 20, 40, best epoch, wall seconds,
  seconds per epoch, and ``baselines``: EASE, item-kNN and MostPop fitted on the same split, tuned on
  validation Recall@20 and evaluated with the same protocol (:mod:`training.baselines.compare`);
* ``tuning.sqlite3`` - for a tuned run (``--tune``), the Optuna study that chose the configuration
  (:mod:`training.tuning`); ``config.json``'s ``tuning`` says what the search did.

:func:`execute_run` trains and evaluates one run; :func:`load_run` rebuilds the trained model.

A run is trained in a hidden staging folder beside its final one (``.<name>.partial``) and moved into
place only once ``metrics.json`` is written, so the run folder is always either a finished run or
absent: a run that fails or is killed leaves any earlier run of the same folder untouched (a killed
run's staging folder is cleared by the next run of that folder).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from rec_contract.atomic import atomic_file, atomic_write_text
from training.baselines.compare import BaselineOptions, comparison_lines, fit_baselines, model_label
from training.data import InteractionDataset, Split, default_split_method, load_dataset, split_dataset
from training.data.scarce import subsample_train
from training.evaluation import evaluate
from training.models import Recommender, TrainConfig, build_model, model_config
from training.models.base import CHECKPOINT_FILE, EPOCHS_FILE, FitResult, save_checkpoint
from training.proex import ProExConfig, ProExFusion
from training.profiles import ProfileInputs, load_profile_inputs

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
SPLIT_DIR = "split"
RUN_FORMAT_VERSION = 1


@dataclass
class RunSpec:
    """Everything that defines a training run."""

    dataset: str
    model: str
    proex: ProExConfig | None = None
    profiles_path: str | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    split_method: str | None = None
    split_seed: int = 2024
    out: str | None = None
    data_dir: str | None = None
    baselines: BaselineOptions | None = field(default_factory=BaselineOptions)  # None: fit none
    tuning: dict[str, Any] | None = None  # what the hyperparameter search did (config.json)
    attachments: dict[str, Path] = field(default_factory=dict)  # run-folder file name -> file to copy
    # train on a seeded share of each user's training interactions (validation and test unchanged;
    # ``training.data.scarce.subsample_train``); the sparsity curve
    train_fraction: float = 1.0
    subsample_seed: int = 2024
    # a finished training of exactly this configuration and seed (the best tuning trial, see
    # ``training.tuning``): its weights and fit record are evaluated instead of training again
    trained: Path | None = None

    def run_dir(self) -> Path:
        """``--out``, or ``<work dir>/runs/<dataset>-<model>-<proex|base>-seed<seed>``."""
        if self.out:
            return Path(self.out)
        work = Path(os.environ.get("PROFILEREC_WORK_DIR") or "var")
        variant = "proex" if self.proex is not None else "base"
        return work / "runs" / f"{Path(self.dataset).name}-{self.model}-{variant}-seed{self.train.seed}"


@dataclass
class RunConfig:
    """The contents of ``config.json``."""

    model: str
    hyperparameters: dict[str, Any]
    proex: dict[str, Any] | None
    dataset: str
    dataset_fingerprint: str
    split_method: str
    split_seed: int
    split_fingerprint: str
    n_users: int
    n_items: int
    profiles: dict[str, Any] | None
    train: dict[str, Any]
    seed: int
    created_at: str
    format_version: int = RUN_FORMAT_VERSION
    dataset_source: str = ""  # what load_dataset() was given: a registry name or a saved dataset folder
    tuning: dict[str, Any] | None = None  # the hyperparameter search that chose this configuration
    train_fraction: float = 1.0  # the share of each user's training interactions kept (subsample)
    subsample_seed: int | None = None  # its seed (None: the whole training split)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        return cls(**json.loads(text))

    def proex_config(self) -> ProExConfig | None:
        return ProExConfig.from_dict(self.proex) if self.proex is not None else None


@dataclass
class RunOutcome:
    """What :func:`execute_run` returns: the folder, the trained model and its figures."""

    run_dir: Path
    model: Recommender
    config: RunConfig
    fit: FitResult
    metrics: dict[str, Any]


def execute_run(spec: RunSpec) -> RunOutcome:
    """Load data (and profiles), train with early stopping, evaluate on test, write the run folder."""
    started = time.perf_counter()
    final_dir = spec.run_dir()
    run_dir = staging_dir(final_dir)
    if run_dir.exists():  # left by a run that was killed
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    try:
        outcome = _train_and_evaluate(spec, run_dir, started)
        publish_run(run_dir, final_dir)
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    log.info(
        "test recall@20=%.4f ndcg@20=%.4f (best epoch %d)",
        outcome.metrics["test"]["recall@20"],
        outcome.metrics["test"]["ndcg@20"],
        outcome.fit.best_epoch,
        extra={
            "run_dir": str(final_dir),
            **{f"test_{k}": v for k, v in outcome.metrics["test"].items()},
        },
    )
    return RunOutcome(final_dir, outcome.model, outcome.config, outcome.fit, outcome.metrics)


def staging_dir(final_dir: Path) -> Path:
    """Where the run of ``final_dir`` is trained before it is published: a hidden sibling folder."""
    return final_dir.parent / f".{final_dir.name}.partial"


def publish_run(staging: Path, final_dir: Path) -> None:
    """Move a finished run from ``staging`` to ``final_dir``, replacing an older run there.

    The older run is first renamed aside and deleted only once the new one is in place, so a crash
    in between leaves one of the two complete runs on disk (the older one as ``.<name>.replaced``).
    """
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    replaced = final_dir.parent / f".{final_dir.name}.replaced"
    if replaced.exists():
        shutil.rmtree(replaced)
    if final_dir.exists():
        final_dir.replace(replaced)
    staging.replace(final_dir)
    shutil.rmtree(replaced, ignore_errors=True)


@dataclass
class RunData:
    """What a run trains on: the dataset, its split (and method) and the profile inputs (ProEx)."""

    dataset: InteractionDataset
    method: str
    split: Split
    profiles: ProfileInputs | None


def prepare_data(spec: RunSpec) -> RunData:
    """Load the dataset, split it as ``spec`` says and load the profile inputs of a ProEx run."""
    dataset = load_dataset(spec.dataset, spec.data_dir)
    method = spec.split_method or default_split_method(dataset.name)
    split = split_dataset(dataset, method, seed=spec.split_seed)  # type: ignore[arg-type]
    split = subsample_train(split, spec.train_fraction, spec.subsample_seed)
    profiles: ProfileInputs | None = None
    if spec.proex is not None:
        if not spec.profiles_path:
            raise ValueError("a ProEx run needs a profile store (--profiles)")
        profiles = load_profile_inputs(spec.profiles_path, dataset, spec.proex.n_profiles)
        if not profiles.user_mask.any() and not profiles.item_mask.any():
            raise ValueError(f"profile store {spec.profiles_path} covers none of {dataset.name}'s ids")
    return RunData(dataset, method, split, profiles)


def _train_and_evaluate(spec: RunSpec, run_dir: Path, started: float) -> RunOutcome:
    """Everything :func:`execute_run` does inside the (staging) folder ``run_dir``."""
    data = prepare_data(spec)
    dataset, method, split, profiles = data.dataset, data.method, data.split, data.profiles
    model_config(spec.model, spec.hyperparameters)  # validate before any work
    torch.manual_seed(spec.train.seed)  # model initialisation is part of the seeded run
    model = build_model(spec.model, split.train, spec.hyperparameters, spec.proex, profiles)
    config = RunConfig(
        model=spec.model,
        hyperparameters=model.hyperparameters(),
        # what the model uses (a model may turn an option off, e.g. LightGCN's input_rank without item ids)
        proex=model.proex.as_dict() if isinstance(model, ProExFusion) and model.proex is not None else None,
        dataset=dataset.name,
        dataset_source=str(spec.dataset),
        dataset_fingerprint=dataset.fingerprint(),
        split_method=method,
        split_seed=spec.split_seed,
        split_fingerprint=split.fingerprint(),
        n_users=split.n_users,
        n_items=split.n_items,
        profiles=profiles.describe() if profiles is not None else None,
        train=spec.train.as_dict(),
        seed=spec.train.seed,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        tuning=spec.tuning,
        train_fraction=spec.train_fraction,
        subsample_seed=spec.subsample_seed if spec.train_fraction < 1.0 else None,
    )
    for name, source in spec.attachments.items():
        shutil.copy2(source, run_dir / name)
    atomic_write_text(run_dir / CONFIG_FILE, config.to_json())
    split.save(run_dir / SPLIT_DIR)
    log.info(
        "training %s (%s) on %s",
        spec.model,
        "proex" if profiles else "base",
        dataset.name,
        extra={"run_dir": str(run_dir)},
    )
    if spec.trained is not None:
        fit = load_trained(model, spec.trained, run_dir)
    else:
        fit = model.fit(split, spec.train, run_dir)
    scorer = model.make_scorer()
    valid = evaluate(scorer, split, "valid")
    test = evaluate(scorer, split, "test")
    metrics: dict[str, Any] = {
        "valid": valid.metrics,
        "test": test.metrics,
        "best_epoch": fit.best_epoch,
        "epochs_run": fit.epochs_run,
        "seconds_per_epoch": fit.seconds_per_epoch,
        "cpu_seconds_per_epoch": fit.cpu_seconds_per_epoch,
        "train_seconds": fit.train_seconds,
        "eval_seconds": fit.eval_seconds,
        "wall_seconds": time.perf_counter() - started,
    }
    if spec.baselines is not None:
        metrics["baselines"] = fit_baselines(split, spec.baselines)
        for line in comparison_lines(
            model_label(spec.model, profiles is not None), metrics, metrics["baselines"]
        ):
            log.info(line, extra={"run_dir": str(run_dir)})
        metrics["wall_seconds"] = time.perf_counter() - started
    atomic_write_text(run_dir / METRICS_FILE, json.dumps(metrics, indent=2))
    return RunOutcome(run_dir, model, config, fit, metrics)


def save_trained(model: Recommender, fit: FitResult, path: Path, **extra: Any) -> None:
    """Write ``model``'s (best) weights and its fit record to ``path`` atomically (see ``trained``)."""
    with atomic_file(path) as tmp:
        torch.save({"state": model.state_dict(), "fit": asdict(fit), **extra}, tmp)


def load_trained(model: Recommender, path: Path, run_dir: Path) -> FitResult:
    """Load the weights :func:`save_trained` wrote into ``model`` and give back their fit record.

    The run folder gets the checkpoint and the epoch log the training would have written.
    """
    payload = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(payload["state"])
    model.eval()
    fit = FitResult(**payload["fit"])
    save_checkpoint(model, run_dir / CHECKPOINT_FILE)
    atomic_write_text(run_dir / EPOCHS_FILE, "".join(json.dumps(row) + "\n" for row in fit.history))
    log.info("reusing the finished training of %s (best epoch %d)", path.name, fit.best_epoch)
    return fit


def load_run(run_dir: str | Path) -> tuple[Recommender, RunConfig]:
    """Rebuild the trained model of a run folder (best checkpoint, eval mode) and its config.

    The split comes from the run's ``split/`` folder (checked against the recorded fingerprint); the
    profile vectors are part of the checkpoint.
    """
    run_dir = Path(run_dir)
    config = RunConfig.from_json((run_dir / CONFIG_FILE).read_text())
    split = Split.load(run_dir / SPLIT_DIR)
    if split.fingerprint() != config.split_fingerprint:
        raise ValueError(f"{run_dir}: the saved split does not match config.json's fingerprint")
    proex = config.proex_config()
    profiles = None
    if proex is not None and config.profiles is not None:
        profiles = ProfileInputs.zeros(
            config.n_users, config.n_items, int(config.profiles["k"]), int(config.profiles["dim"])
        )
    model = build_model(config.model, split.train, config.hyperparameters, proex, profiles)
    state = torch.load(run_dir / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.eval()
    return model, config
