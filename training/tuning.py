"""Hyperparameter search on validation Recall@20 (``profilerec-train --tune``) with Optuna.

Each trial builds the model with sampled hyperparameters and trains it with the shared trainer
(early stopping on validation Recall@20, the run's epochs / cadence / patience / seed); the validation
Recall@20 of every evaluation checkpoint is reported to the trial, and a median pruner stops trials
that trail the others at the same checkpoint (after ``prune_after`` complete trials and
``prune_warmup_epochs`` epochs). The sampler
is TPE. The search stops after ``trials`` finished trials (complete or pruned, resumed ones included)
or when this invocation's wall-clock ``budget_s`` is spent; a trial still training when the budget
runs out is stopped at its next checkpoint and counted as pruned.

The first trial of a new study is the configuration the run would train without ``--tune`` (the
model's defaults, the given ``--hp``, the ProEx options), so the search starts from it and the tuned
configuration is never below it on validation.

What is searched (``--hp`` values and ProEx options given on the command line stay fixed):

* LightGCN: ``lr``, ``l2``, ``embedding_dim``, ``n_layers``;
* Mult-VAE: ``lr``, ``dropout``, ``hidden_dim``, ``latent_dim``, ``anneal_cap``, ``anneal_steps``;
* ProEx-fused models, in addition: ``lambda_align``, ``lambda_reg``, ``lambda_var`` and ``f_psi``'s
  ``mapping_hidden``, ``profile_dropout``, ``mapping_dropout``, ``mapping_zero_init`` (and ``beta`` for
  Mult-VAE).

Resumable: the study lives in an SQLite file. While the search runs it is
``.<run folder name>.tuning.sqlite3`` beside the run folder; the final run (the best configuration
with the run's seed, through :func:`training.runs.execute_run`) copies it into the run folder as
``tuning.sqlite3``. A trial trains exactly what that run would (same seed, same training settings), so
the best complete trial's weights and fit record are kept beside the study
(``.<run folder name>.best-trial.pt``) and the run evaluates them instead of training the best
configuration a second time (it retrains only when that file is missing or is another trial's).
A rerun continues the study: after a kill from the working file (the killed
trial is marked failed and its parameters are tried again), after a finished run from the run folder's
copy (so ``--trials 40`` after ``--trials 20`` adds 20 trials). A study made on another split, model
or profile store is refused. The best configuration is what ``config.json`` (and so the bundle's
manifest) records, with a ``tuning`` section: trials, best trial, best validation Recall@20, budget.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from training.models.base import VALID_METRIC, Trainer
from training.proex import ProExConfig
from training.runs import RunData, RunOutcome, RunSpec, execute_run, prepare_data, save_trained

log = logging.getLogger(__name__)

STORAGE_FILE = "tuning.sqlite3"
BEST_TRIAL_FILE = "best-trial.pt"
STUDY_NAME = "profilerec"


@dataclass
class TuneOptions:
    """How long to search: ``trials`` in all (resumed ones count), ``budget_s`` seconds of this
    invocation (None: no limit), a progress bar on a terminal (``progress``) else one line per trial."""

    trials: int = 30
    budget_s: float | None = 3600.0
    progress: bool = True
    startup_trials: int = 5  # random trials before TPE models the space
    # Pruning starts after this many complete trials (a trial then stops at a checkpoint where it trails
    # their median), and never before ``prune_warmup_epochs``: on a large dataset a trial takes minutes
    # and an hour's budget holds a handful, so waiting for ``startup_trials`` would never prune.
    prune_after: int = 2
    prune_warmup_epochs: int = 15
    seed: int = 2024

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise ValueError("--trials must be >= 1")
        if self.budget_s is not None and self.budget_s <= 0:
            raise ValueError("--tune-budget-s must be > 0")


# The search spaces: name -> ("float", low, high, log) | ("int", low, high, log) | ("cat", choices).
Space = tuple[Any, ...]
MODEL_SPACES: dict[str, dict[str, Space]] = {
    "lightgcn": {
        "lr": ("float", 3e-4, 2e-2, True),
        "l2": ("float", 1e-9, 1e-4, True),
        "embedding_dim": ("cat", [32, 64, 128]),
        "n_layers": ("int", 1, 4, False),
    },
    "multvae": {
        "lr": ("float", 3e-4, 1e-2, True),
        "dropout": ("float", 0.0, 0.7, False),
        "hidden_dim": ("cat", [200, 400, 600]),
        "latent_dim": ("cat", [64, 128, 200]),
        "anneal_cap": ("float", 0.0, 1.0, False),
        "anneal_steps": ("int", 10, 20000, True),
    },
}
PROEX_SPACE: dict[str, Space] = {
    "lambda_align": ("float", 1e-3, 1.0, True),
    "lambda_reg": ("float", 1e-3, 1.0, True),
    "lambda_var": ("float", 1e-2, 10.0, True),
    "mapping_hidden": ("cat", [64, 128, 256, 512]),
    "profile_dropout": ("float", 0.0, 0.5, False),
    "mapping_dropout": ("float", 0.0, 0.5, False),
    "mapping_zero_init": ("cat", [False, True]),
}
PROEX_MODEL_SPACES: dict[str, dict[str, Space]] = {"multvae": {"beta": ("float", 0.05, 1.0, False)}}


def _draw(trial: Any, name: str, space: Space) -> Any:
    kind = space[0]
    if kind == "float":
        return trial.suggest_float(name, space[1], space[2], log=space[3])
    if kind == "int":
        return trial.suggest_int(name, space[1], space[2], log=space[3])
    return trial.suggest_categorical(name, space[1])


def _inside(value: Any, space: Space) -> bool:
    if space[0] == "cat":
        return value in space[1]
    return isinstance(value, int | float) and not isinstance(value, bool) and space[1] <= value <= space[2]


def _spaces(model: str) -> tuple[dict[str, Space], dict[str, Space]]:
    if model not in MODEL_SPACES:
        raise ValueError(f"no search space for model {model!r}")
    return MODEL_SPACES[model], {**PROEX_SPACE, **PROEX_MODEL_SPACES.get(model, {})}


def suggest(
    trial: Any,
    model: str,
    hyperparameters: dict[str, Any],
    proex: ProExConfig | None,
    fixed_proex: frozenset[str] = frozenset(),
) -> tuple[dict[str, Any], ProExConfig | None]:
    """Sample one configuration: the model's hyperparameters (``hyperparameters`` keys stay as given)
    and, for a fused model, the ProEx options not in ``fixed_proex``."""
    model_space, proex_space = _spaces(model)
    hp = dict(hyperparameters)
    for name, space in model_space.items():
        if name not in hp:
            hp[name] = _draw(trial, name, space)
    if proex is None:
        return hp, None
    values = {
        name: _draw(trial, name, space) for name, space in proex_space.items() if name not in fixed_proex
    }
    return hp, replace(proex, **values)


def starting_params(
    model: str,
    hyperparameters: dict[str, Any],
    proex: ProExConfig | None,
    fixed_proex: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """The searched parameters of the configuration the run would train without ``--tune`` (the
    model's defaults with the given hyperparameters, the given ProEx options): a new study's first
    trial, so the search starts from the shipped configuration and what it returns is never below it
    on validation. A value outside its search range is left to the sampler."""
    from training.models import model_config

    model_space, proex_space = _spaces(model)
    current = asdict(model_config(model, hyperparameters))
    params = {n: current[n] for n, space in model_space.items() if n not in hyperparameters}
    if proex is not None:
        options = proex.as_dict()
        params |= {n: options[n] for n in proex_space if n not in fixed_proex}
    spaces = {**model_space, **proex_space}
    return {n: v for n, v in params.items() if _inside(v, spaces[n])}


class _BudgetSpentError(Exception):
    """The wall-clock budget ran out during a trial."""


class _TrialTrainer(Trainer):
    """The shared trainer, reporting each validation checkpoint to the trial (and pruning there)."""

    def __init__(self, config: Any, trial: Any, deadline: float | None) -> None:
        super().__init__(config)
        self.trial = trial
        self.deadline = deadline
        self.checkpoints = 0

    def validate(self, model: Any, split: Any) -> Any:
        import optuna

        result = super().validate(model, split)
        self.checkpoints += 1
        self.trial.report(result[VALID_METRIC], step=self.checkpoints * self.config.eval_every)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {self.checkpoints * self.config.eval_every}")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise _BudgetSpentError
        return result


def working_storage(final_dir: Path) -> Path:
    """Where the study lives while the search runs: a hidden file beside the run folder."""
    return final_dir.parent / f".{final_dir.name}.{STORAGE_FILE}"


def _identity(spec: RunSpec, data: RunData) -> dict[str, Any]:
    return {
        "model": spec.model,
        "proex": spec.proex is not None,
        "split_fingerprint": data.split.fingerprint(),
        "profiles_fingerprint": data.profiles.fingerprint() if data.profiles is not None else None,
        "metric": f"valid {VALID_METRIC}",
    }


def _open_study(storage_path: Path, identity: dict[str, Any], options: TuneOptions, done: int) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage_path.parent.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=STUDY_NAME,
        storage=f"sqlite:///{storage_path}",
        direction="maximize",
        load_if_exists=True,
        # a resumed study must not replay the same sampler draws
        sampler=optuna.samplers.TPESampler(n_startup_trials=options.startup_trials, seed=options.seed + done),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=options.prune_after, n_warmup_steps=options.prune_warmup_epochs
        ),
    )
    recorded = study.user_attrs.get("identity")
    if recorded is None:
        study.set_user_attr("identity", identity)
    elif recorded != identity:
        differs = sorted(k for k in identity if recorded.get(k) != identity[k])
        raise ValueError(
            f"the tuning study in {storage_path} was made for another run ({', '.join(differs)} "
            "differ): remove it or choose another --out"
        )
    return study


def _resume_study(
    storage: Path, identity: dict[str, Any], options: TuneOptions, spec: RunSpec, fixed_proex: frozenset[str]
) -> Any:
    """The study to continue: trials a kill left running run again; a new one starts from the
    configuration the run would use."""
    from optuna.trial import TrialState

    probe = _open_study(storage, identity, options, 0)
    study = _open_study(storage, identity, options, len(probe.trials)) if probe.trials else probe
    for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):  # left by a kill
        study.tell(stale.number, state=TrialState.FAIL)
        study.enqueue_trial(stale.params)
        log.info("trial %d was interrupted: it runs again", stale.number)
    if not study.trials:  # a new study: the first trial is the configuration the run would use
        study.enqueue_trial(starting_params(spec.model, spec.hyperparameters, spec.proex, fixed_proex))
    return study


def _finished(study: Any) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def tune(
    spec: RunSpec, options: TuneOptions, fixed_proex: frozenset[str] = frozenset()
) -> tuple[RunSpec, Path]:
    """Search ``spec``'s model hyperparameters; return the spec of the best configuration (with its
    ``tuning`` summary and the study file attached) and the working study file."""
    import optuna
    import torch

    from training.models import build_model, model_config

    started = time.monotonic()
    deadline = started + options.budget_s if options.budget_s is not None else None
    final_dir = spec.run_dir()
    storage = working_storage(final_dir)
    if not storage.exists() and (final_dir / STORAGE_FILE).exists():
        shutil.copy2(final_dir / STORAGE_FILE, storage)  # continue the study of a finished tuned run
    model_config(spec.model, spec.hyperparameters)  # validate before any work
    data = prepare_data(spec)
    study = _resume_study(storage, _identity(spec, data), options, spec, fixed_proex)
    resumed = _finished(study)
    remaining = options.trials - resumed
    train_cfg = replace(spec.train, progress=False)
    trained_file = best_trial_file(final_dir)
    interactive = options.progress and sys.stderr.isatty()

    def objective(trial: optuna.Trial) -> float:
        hp, proex = suggest(trial, spec.model, spec.hyperparameters, spec.proex, fixed_proex)
        torch.manual_seed(train_cfg.seed)  # as execute_run: the best trial's run is reproducible
        model = build_model(spec.model, data.split.train, hp, proex, data.profiles)
        trainer = _TrialTrainer(train_cfg, trial, deadline)
        trial_started = time.monotonic()
        try:
            fit = trainer.fit(model, data.split)
        except _BudgetSpentError:
            trial.set_user_attr("stopped_by_budget", True)
            raise optuna.TrialPruned("the wall-clock budget ran out") from None
        finally:
            trial.set_user_attr("seconds", round(time.monotonic() - trial_started, 2))
        trial.set_user_attr("best_epoch", fit.best_epoch)
        trial.set_user_attr("epochs_run", fit.epochs_run)
        value = float(fit.best_valid[VALID_METRIC])
        earlier = _best(study)
        if earlier is None or value > earlier.value:  # keep the best trial's weights for the run
            save_trained(
                model, fit, trained_file, trial=trial.number, params=trial.params, train=_train_key(train_cfg)
            )
        return value

    report = _reporter(options, interactive)

    base_logger = logging.getLogger("training.models.base")
    level = base_logger.level
    base_logger.setLevel(logging.WARNING)  # no epoch lines from the trials
    try:
        if remaining > 0 and (deadline is None or time.monotonic() < deadline):
            log.info(
                "tuning %s%s: %d trials to run (%d done), budget %s",
                spec.model,
                "+proex" if spec.proex is not None else "",
                remaining,
                resumed,
                f"{options.budget_s:.0f} s" if options.budget_s is not None else "none",
            )
            with warnings.catch_warnings():  # Optuna calls its progress bar experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.optimize(
                    objective,
                    n_trials=remaining,
                    timeout=None if deadline is None else max(1.0, deadline - time.monotonic()),
                    callbacks=[report],
                    show_progress_bar=interactive,
                )
    finally:
        base_logger.setLevel(level)
    best = _best(study)
    hp, proex = dict(spec.hyperparameters), spec.proex
    if best is not None:
        hp, proex = suggest(
            optuna.trial.FixedTrial(best.params), spec.model, spec.hyperparameters, spec.proex, fixed_proex
        )
    else:
        log.warning("no tuning trial finished (budget too small?): the run uses the given configuration")
    summary = _summary(study, best, options, started)
    tuned = replace(
        spec,
        hyperparameters=hp,
        proex=proex,
        tuning=summary,
        attachments={**spec.attachments, STORAGE_FILE: storage},
        trained=_trained_by(best, trained_file, train_cfg),
    )
    return tuned, storage


def _train_key(train: Any) -> dict[str, Any]:
    """The training settings that decide a trial's weights (not the progress bar)."""
    return {k: v for k, v in asdict(train).items() if k != "progress"}


def best_trial_file(final_dir: Path) -> Path:
    """Where the best complete trial's weights and fit record wait for the run: beside the study."""
    return final_dir.parent / f".{final_dir.name}.{BEST_TRIAL_FILE}"


def _trained_by(best: Any, trained_file: Path, train: Any) -> Path | None:
    """The best trial's saved training, if it is there and is that trial's: same trial, parameters and
    training settings (else the run retrains).

    A trial trains the configuration with the run's seed and training settings, so its weights are
    what training the best configuration again would give: the run evaluates them instead.
    """
    if best is None or not trained_file.exists():
        return None
    import torch

    saved = torch.load(trained_file, map_location="cpu", weights_only=True, mmap=True)  # metadata only
    same = (
        saved.get("trial") == best.number
        and saved.get("params") == best.params
        and saved.get("train") == _train_key(train)
    )
    return trained_file if same else None


def _reporter(options: TuneOptions, interactive: bool) -> Callable[[Any, Any], None]:
    """The study callback: one log line per finished trial (none when a progress bar shows them)."""
    from optuna.trial import TrialState

    def report(study: Any, trial: Any) -> None:
        if interactive:
            return
        best = _best(study)
        state = "pruned" if trial.state == TrialState.PRUNED else f"{trial.state.name.lower()}"
        value = f"valid R@20 {trial.value:.4f}" if trial.value is not None else state
        last = max(trial.intermediate_values.items(), default=None)
        if trial.state == TrialState.PRUNED and last is not None:
            value = f"{state} at epoch {last[0]} (valid R@20 {last[1]:.4f})"
        log.info(
            "trial %d/%d: %s, %.0f s; best %s",
            _finished(study),
            options.trials,
            value,
            trial.user_attrs.get("seconds", 0.0),
            f"{best.value:.4f} (trial {best.number})" if best is not None else "none yet",
        )

    return report


def _summary(study: Any, best: Any, options: TuneOptions, started: float) -> dict[str, Any]:
    """What the search did, for the run's metrics and the bundle manifest."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    return {
        "storage": STORAGE_FILE,
        "trials": len([t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]),
        "complete": len([t for t in trials if t.state == TrialState.COMPLETE]),
        "pruned": len([t for t in trials if t.state == TrialState.PRUNED]),
        "failed": len([t for t in trials if t.state == TrialState.FAIL]),
        "trials_requested": options.trials,
        "budget_s": options.budget_s,
        "this_invocation_seconds": round(time.monotonic() - started, 1),
        "trial_seconds": round(sum(float(t.user_attrs.get("seconds", 0.0)) for t in trials), 1),
        "best_trial": best.number if best is not None else None,
        "best_valid_recall@20": best.value if best is not None else None,
        "best_params": best.params if best is not None else {},
        "searched": sorted({name for t in trials for name in t.params}),
        "sampler": "TPE",
        "pruner": "median",
        "valid_recall@20_by_trial": [float(t.value) if t.value is not None else None for t in trials],
    }


def _best(study: Any) -> Any:
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max(complete, key=lambda t: t.value) if complete else None


def tune_and_run(
    spec: RunSpec, options: TuneOptions, fixed_proex: frozenset[str] = frozenset()
) -> RunOutcome:
    """:func:`tune`, then train the best configuration into the run folder (which keeps the study)."""
    tuned, storage = tune(spec, options, fixed_proex)
    outcome = execute_run(tuned)  # copies the study into the run folder before publishing it
    storage.unlink()
    best_trial_file(spec.run_dir()).unlink(missing_ok=True)
    return outcome
