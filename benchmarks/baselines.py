"""EASE, item-kNN and MostPop on the named datasets (or dataset folders), as every training run reports
them: fitted on the training split, the hyperparameter (EASE's lambda, item-kNN's k) chosen on
validation Recall@20 from the default grids, validation and test metrics with the papers' full-ranking
protocol (:mod:`training.baselines.compare`).

The data README gives EASE Recall@20 0.291 (lambda 500) and MostPop 0.153 on MovieLens-100k (random
60/20/20), EASE 0.169 (lambda 100) and MostPop 0.032 on rlmrec-amazon-book.

    python -m benchmarks baselines --datasets movielens-100k rlmrec-amazon-book
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from benchmarks.results import print_table, record

PUBLISHED_RECALL20 = {
    ("movielens-100k", "ease"): 0.291,
    ("movielens-100k", "mostpop"): 0.153,
    ("rlmrec-amazon-book", "ease"): 0.169,
    ("rlmrec-amazon-book", "mostpop"): 0.032,
}


def run(datasets: list[str], seed: int, threads: int) -> list[dict[str, Any]]:
    from training.baselines import fit_baselines
    from training.data import default_split_method, load_dataset, split_dataset

    rows = []
    for name in datasets:
        dataset = load_dataset(name)
        split = split_dataset(dataset, default_split_method(dataset.name), seed=seed)
        for baseline, result in fit_baselines(split).items():
            row: dict[str, Any] = {
                "dataset": dataset.name,
                "users": split.n_users,
                "items": split.n_items,
                "baseline": result["label"],
                "params": " ".join(f"{k}={v:g}" for k, v in (result.get("params") or {}).items()),
            }
            if "skipped" in result:
                rows.append({**row, "note": result["skipped"]})
                continue
            rows.append(
                {
                    **row,
                    "valid_R@20": result["valid"]["recall@20"],
                    "R@20": result["test"]["recall@20"],
                    "N@20": result["test"]["ndcg@20"],
                    "R@10": result["test"]["recall@10"],
                    "published_R@20": PUBLISHED_RECALL20.get((dataset.name, baseline), float("nan")),
                    "fit_and_select_s": result["seconds"],
                    "threads": threads,
                    "valid_R@20_by_param": " ".join(
                        f"{k}:{v:.4f}" for k, v in (result.get("grid_valid_recall@20") or {}).items()
                    ),
                }
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=["movielens-100k", "rlmrec-amazon-book"],
        help="datasets to run (registry names)",
    )
    parser.add_argument("--seed", type=int, default=2024, help="seed of the random split")
    parser.add_argument("--threads", type=int, default=2, help="BLAS threads (set before numpy loads)")
    parser.add_argument("--note", default="", help="free text stored with the record (e.g. machine load)")
    args = parser.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))
    load_before = os.getloadavg()
    cpu0, started = time.process_time(), time.perf_counter()
    rows = run(args.datasets, args.seed, args.threads)
    figures = {
        "table": rows,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "cpu_seconds": round(time.process_time() - cpu0, 1),
        "loadavg_1m_before": round(load_before[0], 2),
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
    }
    print_table(rows, "Baselines: hyperparameter on validation Recall@20, test metrics (full ranking)")
    print({k: v for k, v in figures.items() if k != "table"})
    record(
        "baselines",
        figures,
        {"datasets": args.datasets, "seed": args.seed, "threads": args.threads, "note": args.note},
    )


if __name__ == "__main__":
    main()
