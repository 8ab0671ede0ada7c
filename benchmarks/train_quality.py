"""Base vs ProEx-fused LightGCN and Mult-VAE: train, evaluate on test, print a table like the ProEx
paper's Table 2 (R@10, R@20, N@10, N@20 and the relative improvement), with CPU seconds per epoch.

Every (dataset, model, variant, seed) is one training run through :func:`training.runs.execute_run`
(early stopping on validation Recall@20, test metrics of the best checkpoint), written to
``<runs-dir>/<dataset>-<model>-<variant>-seed<seed>``. With ``--reuse`` a finished run folder whose
``config.json`` matches the requested run exactly is read back instead of retrained (the record says
which runs were reused).

Beside the models, every dataset gets EASE, item-kNN and MostPop fitted on the same split (lambda and
k chosen on validation Recall@20; :mod:`training.baselines.compare`): table rows with variant
``baseline`` and a line per model, e.g. ``test R@20: Mult-VAE+ProEx 0.29 | EASE 0.29 | MostPop 0.15``.

ProEx needs a profile store (``--profiles``). The RLMRec Amazon-Book split ships no profile text, so
on it only the base models run (parity with the published figures).

    python -m benchmarks train_quality --datasets rlmrec-amazon-book --epochs 1500 --patience 50
    python -m benchmarks train_quality --datasets movielens-100k --seeds 1 2 3 \\
        --profiles var/profiles/movielens-100k-extractive
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from benchmarks.results import print_table, record

PUBLISHED = {  # ProEx paper, Table 2 (Amazon-Book): R@10, R@20, N@10, N@20
    ("rlmrec-amazon-book", "lightgcn", "base"): (0.0915, 0.1411, 0.0694, 0.0856),
    ("rlmrec-amazon-book", "lightgcn", "proex"): (0.1008, 0.1533, 0.0770, 0.0940),
    ("rlmrec-amazon-book", "multvae", "base"): (0.0976, 0.1472, 0.0752, 0.0916),
    ("rlmrec-amazon-book", "multvae", "proex"): (0.1091, 0.1596, 0.0824, 0.0997),
}
METRICS = {"R@10": "recall@10", "R@20": "recall@20", "N@10": "ndcg@10", "N@20": "ndcg@20"}
NO_PROFILE_TEXT = {"rlmrec-amazon-book"}


def _keyed(values: list[str], option: str) -> dict[str, dict[str, Any]]:
    """Parse ``MODEL:KEY=VALUE`` options into ``{model: {key: value}}``."""
    out: dict[str, dict[str, Any]] = {}
    for text in values:
        model, sep, assignment = text.partition(":")
        key, sep2, raw = assignment.partition("=")
        if not sep or not sep2:
            raise SystemExit(f"{option} expects MODEL:KEY=VALUE, got {text!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(model, {})[key.replace("-", "_")] = value
    return out


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    """The parts of a run's config.json that define what was trained.

    The ProEx config is read back through :class:`ProExConfig`, so a run trained before an option
    existed compares as that option's default (which is what it trained with).
    """
    from training.proex import ProExConfig

    keys = ("model", "hyperparameters", "dataset", "split_method", "split_seed", "seed")
    profiles = config.get("profiles") or {}
    train = {k: v for k, v in config.get("train", {}).items() if k not in ("progress", "threads")}
    proex = config.get("proex")
    return {
        **{k: config.get(k) for k in keys},
        "proex": ProExConfig.from_dict(proex).as_dict() if isinstance(proex, dict) else proex,
        "train": train,
        "profiles": {k: profiles.get(k) for k in ("path", "version", "fingerprint")} if profiles else None,
        # a run from before the subsample option trained on the whole training split
        "train_fraction": config.get("train_fraction", 1.0),
        "subsample_seed": config.get("subsample_seed"),
    }


def run_one(spec: Any, reuse: bool) -> dict[str, Any]:
    """Train (or reuse) one run; return its figures."""
    from training.runs import CONFIG_FILE, METRICS_FILE, execute_run

    run_dir = spec.run_dir()
    if reuse and (run_dir / METRICS_FILE).exists() and (run_dir / CONFIG_FILE).exists():
        old = json.loads((run_dir / CONFIG_FILE).read_text())
        wanted = _expected_config(spec)
        if wanted is not None and _comparable(old) == _comparable(wanted):
            metrics = json.loads((run_dir / METRICS_FILE).read_text())
            return {"metrics": metrics, "config": old, "run_dir": str(run_dir), "reused": True}
    outcome = execute_run(spec)
    config = json.loads((outcome.run_dir / CONFIG_FILE).read_text())
    return {"metrics": outcome.metrics, "config": config, "run_dir": str(outcome.run_dir), "reused": False}


def _expected_config(spec: Any) -> dict[str, Any] | None:
    """What config.json would say for ``spec`` (profile fingerprint included), without training."""
    from training.data import default_split_method, load_dataset
    from training.models import model_config
    from training.profiles import load_profile_inputs

    dataset = load_dataset(spec.dataset, spec.data_dir)
    profiles = None
    if spec.proex is not None:
        profiles = load_profile_inputs(spec.profiles_path, dataset, spec.proex.n_profiles).describe()
    from dataclasses import asdict

    return {
        "model": spec.model,
        "hyperparameters": asdict(model_config(spec.model, spec.hyperparameters)),
        "proex": spec.proex.as_dict() if spec.proex is not None else None,
        "dataset": dataset.name,
        "split_method": spec.split_method or default_split_method(dataset.name),
        "split_seed": spec.split_seed,
        "seed": spec.train.seed,
        "train": spec.train.as_dict(),
        "profiles": profiles,
        "train_fraction": spec.train_fraction,
        "subsample_seed": spec.subsample_seed if spec.train_fraction < 1.0 else None,
    }


def runs_root(override: str | None = None) -> Path:
    """Where the runs go: ``override`` (``--runs-dir``), else ``$PROFILEREC_WORK_DIR/runs/train_quality``."""
    return Path(override or Path(os.environ.get("PROFILEREC_WORK_DIR") or "var") / "runs" / "train_quality")


def run_folder(runs_dir: Path, dataset: str, model: str, variant: str, seed: int) -> Path:
    """The folder of one (dataset, model, variant, seed) run under ``runs_dir``."""
    return runs_dir / f"{Path(dataset).name}-{model}-{variant}-seed{seed}"


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _std(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    m = _mean(values)
    return (sum((v - m) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def summarise(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Table 2-style rows: per (dataset, model) the base row, the ProEx row and the improvement row."""
    rows: list[dict[str, Any]] = []
    groups: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {}
    for res in results:
        groups.setdefault((res["dataset"], res["model"]), {}).setdefault(res["variant"], []).append(res)
    for (dataset, model), variants in groups.items():
        means: dict[str, dict[str, float]] = {}
        for variant in ("base", "proex"):
            runs = variants.get(variant)
            if not runs:
                continue
            tests = [r["metrics"]["test"] for r in runs]
            means[variant] = {label: _mean([t[key] for t in tests]) for label, key in METRICS.items()}
            published = PUBLISHED.get((dataset, model, variant))
            rows.append(
                {
                    "dataset": dataset,
                    "model": model,
                    "variant": variant,
                    "seeds": len(runs),
                    **means[variant],
                    "R@20_std": _std([t["recall@20"] for t in tests]),
                    "R@20_per_seed": " ".join(f"{t['recall@20']:.4f}" for t in tests),
                    "N@20_per_seed": " ".join(f"{t['ndcg@20']:.4f}" for t in tests),
                    "paper_R@20": published[1] if published else float("nan"),
                    "best_epoch": _mean([float(r["metrics"]["best_epoch"]) for r in runs]),
                    "s_per_epoch": _mean([r["metrics"]["seconds_per_epoch"] for r in runs]),
                    "cpu_s_per_epoch": _mean(
                        [
                            r["metrics"]["cpu_seconds_per_epoch"]
                            for r in runs
                            if "cpu_seconds_per_epoch" in r["metrics"]
                        ]
                    ),
                    "wall_s": sum(r["metrics"]["wall_seconds"] for r in runs),
                }
            )
        if "base" in means and "proex" in means:
            rows.append(
                {
                    "dataset": dataset,
                    "model": model,
                    "variant": "improv%",
                    "seeds": len(variants["proex"]),
                    **{
                        label: 100.0 * (means["proex"][label] - means["base"][label]) / means["base"][label]
                        for label in METRICS
                    },
                }
            )
    return rows


def train_config(args: argparse.Namespace, seed: int, progress: bool) -> Any:
    """The ``TrainConfig`` of the ``--epochs --eval-every --patience --threads`` options."""
    from training.models import TrainConfig

    return TrainConfig(
        epochs=args.epochs,
        eval_every=args.eval_every,
        patience=args.patience,
        seed=seed,
        threads=args.threads,
        progress=progress,
    )


def dataset_baselines(dataset: str, split_seed: int) -> dict[str, dict[str, Any]]:
    """EASE, item-kNN and MostPop on the split the runs of ``dataset`` trained on (cached per split:
    the runs trained in this process have already fitted them)."""
    from training.baselines import fit_baselines
    from training.data import default_split_method, load_dataset, split_dataset

    data = load_dataset(dataset)
    split = split_dataset(data, default_split_method(data.name), seed=split_seed)
    return fit_baselines(split)


def baseline_rows(baselines: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Table rows (variant ``baseline``) with the test metrics of each dataset's baselines."""
    rows = []
    for dataset, results in baselines.items():
        for result in results.values():
            if "test" not in result:
                continue
            rows.append(
                {
                    "dataset": dataset,
                    "model": result["label"],
                    "variant": "baseline",
                    "seeds": 1,
                    **{label: result["test"][key] for label, key in METRICS.items()},
                    "params": " ".join(f"{k}={v:g}" for k, v in (result.get("params") or {}).items()),
                }
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--datasets", nargs="+", default=["movielens-100k"], help="datasets to train on (registry names)"
    )
    parser.add_argument(
        "--models",
        nargs="+",
        choices=("lightgcn", "multvae"),
        default=["lightgcn", "multvae"],
        help="models to train",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=("base", "proex"),
        default=["base", "proex"],
        help="base model, ProEx fusion, or both",
    )
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=[2024], help="training seeds (one run per seed)"
    )
    parser.add_argument("--split-seed", type=int, default=2024, help="seed of the random split")
    parser.add_argument("--profiles", default=None, help="profile store folder for the ProEx variant")
    parser.add_argument("--epochs", type=int, default=1000, help="maximum epochs")
    parser.add_argument("--eval-every", type=int, default=3, help="epochs between validations")
    parser.add_argument(
        "--patience", type=int, default=20, help="validations without improvement before stopping"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument(
        "--hp",
        action="append",
        default=[],
        metavar="MODEL:KEY=VALUE",
        help="a hyperparameter of one model, e.g. lightgcn:lr=0.001 (repeatable)",
    )
    parser.add_argument(
        "--proex-hp",
        action="append",
        default=[],
        metavar="MODEL:KEY=VALUE",
        help="a ProEx hyperparameter of one model, e.g. multvae:alpha=0.1 (repeatable)",
    )
    parser.add_argument("--runs-dir", default=None, help="default: $PROFILEREC_WORK_DIR/runs/train_quality")
    parser.add_argument("--reuse", action="store_true", help="reuse finished runs with the same config")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="show per-epoch progress bars",
    )
    parser.add_argument("--note", default="", help="free text stored with the record")
    parser.add_argument(
        "--no-record",
        action="store_true",
        help="print only (e.g. one shard of the seeds; record the whole set later with --reuse)",
    )
    args = parser.parse_args(argv)

    from rec_contract.logs import configure_logging
    from training.baselines.compare import comparison_lines, model_label
    from training.baselines.compare import summarise as summarise_baselines
    from training.proex import proex_defaults
    from training.runs import RunSpec

    configure_logging(level="WARNING")
    hps, proex_hps = _keyed(args.hp, "--hp"), _keyed(args.proex_hp, "--proex-hp")
    runs_dir = runs_root(args.runs_dir)
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    profiles_used: dict[str, Any] | None = None
    notes: list[str] = [args.note] if args.note else []
    for dataset in args.datasets:
        for model in args.models:
            for variant in args.variants:
                if variant == "proex" and (dataset in NO_PROFILE_TEXT or not args.profiles):
                    reason = (
                        "no profile text exists offline" if dataset in NO_PROFILE_TEXT else "no --profiles"
                    )
                    notes.append(f"{dataset} {model}: ProEx skipped ({reason})")
                    continue
                for seed in args.seeds:
                    spec = RunSpec(
                        dataset=dataset,
                        model=model,
                        proex=proex_defaults(model, **proex_hps.get(model, {}))
                        if variant == "proex"
                        else None,
                        profiles_path=args.profiles if variant == "proex" else None,
                        hyperparameters=hps.get(model, {}),
                        train=train_config(args, seed, args.progress),
                        split_seed=args.split_seed,
                        out=str(run_folder(runs_dir, dataset, model, variant, seed)),
                    )
                    res = run_one(spec, args.reuse)
                    test = res["metrics"]["test"]
                    print(
                        f"{dataset} {model} {variant} seed {seed}: R@20 {test['recall@20']:.4f} "
                        f"N@20 {test['ndcg@20']:.4f} best epoch {res['metrics']['best_epoch']} "
                        f"{res['metrics']['seconds_per_epoch']:.2f} s/epoch"
                        + (" (reused)" if res["reused"] else ""),
                        flush=True,
                    )
                    if variant == "proex":
                        profiles_used = {
                            k: res["config"]["profiles"].get(k)
                            for k in ("path", "version", "embedding_model", "k", "dim", "fingerprint")
                        }
                    results.append(
                        {"dataset": dataset, "model": model, "variant": variant, "seed": seed, **res}
                    )
    rows = summarise(results)
    baselines = {dataset: dataset_baselines(dataset, args.split_seed) for dataset in args.datasets}
    rows += baseline_rows(baselines)
    print_table(rows, "Test metrics (mean over seeds), best validation Recall@20 checkpoint")
    for row in rows:
        if row["variant"] in ("base", "proex"):
            label = model_label(row["model"], row["variant"] == "proex")
            for line in comparison_lines(
                label, {"test": {"recall@20": row["R@20"]}}, baselines[row["dataset"]], ("test",)
            ):
                print(f"{row['dataset']}: {line}")
    for note in notes:
        print("note:", note)
    figures = {
        "table": rows,
        "wall_seconds": time.perf_counter() - started,
        "run_wall_seconds": sum(r["metrics"]["wall_seconds"] for r in results),
        "reused_runs": sum(1 for r in results if r["reused"]),
        "baselines": {dataset: summarise_baselines(result) for dataset, result in baselines.items()},
    }
    params = {
        "datasets": args.datasets,
        "models": args.models,
        "variants": args.variants,
        "seeds": args.seeds,
        "split_seed": args.split_seed,
        "epochs": args.epochs,
        "eval_every": args.eval_every,
        "patience": args.patience,
        "threads": args.threads,
        "hp": hps,
        "proex_hp": proex_hps,
        "proex_config": {
            model: proex_defaults(model, **proex_hps.get(model, {})).as_dict()
            for model in args.models
            if "proex" in args.variants
        },
        "profiles": profiles_used,
        "notes": notes,
    }
    if not args.no_record:
        record("train_quality", figures, params)


if __name__ == "__main__":
    main()
