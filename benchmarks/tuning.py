"""Default against tuned models against EASE: for each dataset (registry name or dataset folder) and
model (base, or ProEx-fused with ``--profiles``), one run with the shipped hyperparameters and one
``--tune`` run (:mod:`training.tuning`: Optuna TPE on validation Recall@20, ``--trials`` and
``--tune-budget-s`` per model), then the best configuration retrained with each ``--seeds`` seed;
test R@20 / N@20 beside EASE, item-kNN and MostPop on the same split, the trials run and the wall time.

Runs go to ``<runs-dir>/<dataset>-<model>-<variant>-{default,tuned}-seed<seed>``; a tuned run's study is
kept in its folder, so rerunning the benchmark continues the searches.

    python -m benchmarks tuning --datasets movielens-100k rlmrec-amazon-book --models lightgcn multvae \\
        --trials 40 --tune-budget-s 3600 --seeds 2024 2025 2026
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from benchmarks.results import print_table, record
from benchmarks.train_quality import runs_root, train_config


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=["movielens-100k", "rlmrec-amazon-book"],
        help="datasets to tune on (registry names)",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        choices=("lightgcn", "multvae"),
        default=["lightgcn", "multvae"],
        help="models to tune",
    )
    parser.add_argument("--profiles", default=None, help="profile store: adds the ProEx variant")
    parser.add_argument("--trials", type=int, default=40, help="tuning trials per model and dataset")
    parser.add_argument("--tune-budget-s", type=float, default=3600.0, help="per model")
    parser.add_argument("--seeds", nargs="+", type=int, default=[2024], help="seeds of the final runs")
    parser.add_argument("--split-seed", type=int, default=2024, help="seed of the random split")
    parser.add_argument("--epochs", type=int, default=1000, help="maximum epochs per trial")
    parser.add_argument("--eval-every", type=int, default=3, help="epochs between validations")
    parser.add_argument(
        "--patience", type=int, default=20, help="validations without improvement before a trial stops"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--runs-dir", default=None, help="default: $PROFILEREC_WORK_DIR/runs/tuning")
    parser.add_argument("--note", default="", help="free text stored with the record (e.g. machine load)")
    parser.add_argument(
        "--reuse-default",
        action="store_true",
        help="read a default run already finished in --runs-dir with the same model and training "
        "settings instead of training it again (the tuned runs are always trained)",
    )
    args = parser.parse_args(argv)

    from dataclasses import replace

    from rec_contract.logs import configure_logging
    from training.baselines.compare import model_label
    from training.baselines.compare import summarise as summarise_baselines
    from training.runs import execute_run
    from training.tuning import TuneOptions, tune

    configure_logging(level="WARNING")
    runs_dir = Path(args.runs_dir) if args.runs_dir else runs_root(None).parent / "tuning"
    variants = ["base"] + (["proex"] if args.profiles else [])
    load_before = os.getloadavg()
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    baselines: dict[str, Any] = {}
    for dataset in args.datasets:
        for model in args.models:
            for variant in variants:
                where = (args, runs_dir, dataset, model, variant)
                for seed in args.seeds:
                    spec = _spec(*where, "default", seed)
                    default = (args.reuse_default and _finished(spec)) or execute_run(spec)
                    baselines[Path(dataset).name] = default.metrics["baselines"]
                    rows.append(
                        _row(dataset, model_label(model, variant == "proex"), "default", seed, default)
                    )
                tune_started = time.perf_counter()
                options = TuneOptions(trials=args.trials, budget_s=args.tune_budget_s, progress=False)
                tuned_spec, storage = tune(_spec(*where, "tuned", args.seeds[0]), options)
                tune_seconds = time.perf_counter() - tune_started
                for seed in args.seeds:
                    base = _spec(*where, "tuned", seed)
                    # the search's seed reuses its best trial's training; other seeds train
                    trained = tuned_spec.trained if seed == args.seeds[0] else None
                    outcome = execute_run(
                        replace(tuned_spec, train=base.train, out=base.out, trained=trained)
                    )
                    row = _row(dataset, model_label(model, variant == "proex"), "tuned", seed, outcome)
                    assert outcome.config.tuning is not None
                    row["trials"] = outcome.config.tuning["trials"]
                    row["tune_wall_s"] = round(tune_seconds, 1)
                    rows.append(row)
                storage.unlink()
                if tuned_spec.trained is not None:
                    tuned_spec.trained.unlink(missing_ok=True)
        for result in baselines.get(Path(dataset).name, {}).values():
            if "test" in result:
                rows.append(
                    {
                        "dataset": Path(dataset).name,
                        "model": result["label"],
                        "config": "baseline",
                        "seed": "-",
                        "R@20": result["test"]["recall@20"],
                        "N@20": result["test"]["ndcg@20"],
                        "valid_R@20": result["valid"]["recall@20"],
                    }
                )
    print_table(rows, "Default vs tuned vs baselines (test, full ranking)")
    figures = {
        "table": rows,
        "baselines": {k: summarise_baselines(v) for k, v in baselines.items()},
        "wall_seconds": round(time.perf_counter() - started, 1),
        "loadavg_1m_before": round(load_before[0], 2),
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
    }
    params = {k: v for k, v in vars(args).items() if k != "runs_dir"}
    record("tuning", figures, params)


def _spec(
    args: argparse.Namespace, runs_dir: Path, dataset: str, model: str, variant: str, kind: str, seed: int
) -> Any:
    """The run of one (dataset, model, variant), ``kind`` "default" or "tuned", with seed ``seed``."""
    from training.proex import proex_defaults
    from training.runs import RunSpec

    return RunSpec(
        dataset=dataset,
        model=model,
        proex=proex_defaults(model) if variant == "proex" else None,
        profiles_path=args.profiles if variant == "proex" else None,
        train=train_config(args, seed, progress=False),
        split_seed=args.split_seed,
        out=str(runs_dir / f"{Path(dataset).name}-{model}-{variant}-{kind}-seed{seed}"),
    )


def _finished(spec: Any) -> Any:
    """The outcome of ``spec``'s run folder when it holds a finished run of the same settings, else None.

    Same settings: the model, the dataset as given, the split seed, the hyperparameters the spec asks
    for (the shipped defaults: none), no ProEx, and the training settings field by field.
    """
    from types import SimpleNamespace

    from training.runs import CONFIG_FILE, METRICS_FILE, RunConfig

    folder = spec.run_dir()
    if not (folder / METRICS_FILE).is_file() or not (folder / CONFIG_FILE).is_file():
        return None
    config = RunConfig.from_json((folder / CONFIG_FILE).read_text())
    same = (
        config.model == spec.model
        and config.dataset_source == str(spec.dataset)
        and config.split_seed == spec.split_seed
        and config.proex is None
        and spec.proex is None
        and not spec.hyperparameters
        and config.train == spec.train.as_dict()
        and config.tuning is None
    )
    if not same:
        print(f"not reusing {folder}: its settings differ from this run's")
        return None
    print(f"reusing the finished default run {folder}")
    return SimpleNamespace(metrics=json.loads((folder / METRICS_FILE).read_text()), config=config)


def _row(dataset: str, label: str, config: str, seed: int, outcome: Any) -> dict[str, Any]:
    return {
        "dataset": Path(dataset).name,
        "model": label,
        "config": config,
        "seed": seed,
        "R@20": outcome.metrics["test"]["recall@20"],
        "N@20": outcome.metrics["test"]["ndcg@20"],
        "valid_R@20": outcome.metrics["valid"]["recall@20"],
        "best_epoch": outcome.metrics["best_epoch"],
        "run_wall_s": round(outcome.metrics["wall_seconds"], 1),
        "trials": 0,
        "tune_wall_s": 0.0,
    }


if __name__ == "__main__":
    main()
