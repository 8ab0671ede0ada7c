"""Wall time of one full-ranking evaluation: 11,000 users x 9,332 items (rlmrec-amazon-book test part)
with random scores, numpy and torch paths."""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks.results import print_table, record
from training.data import load_dataset, split_dataset
from training.evaluation import evaluate


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--dataset", default="rlmrec-amazon-book", help="dataset to evaluate on (registry name)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions (the median is reported)")
    args = parser.parse_args(argv)
    dataset = load_dataset(args.dataset)
    split = split_dataset(dataset, "predefined" if dataset.predefined_split else "random")
    rng = np.random.default_rng(0)
    table = rng.standard_normal((split.n_users, split.n_items), dtype=np.float32)
    rows = []
    try:
        import torch

        torch_table = torch.from_numpy(table)
        backends = {"numpy": lambda u: table[u].copy(), "torch": lambda u: torch_table[u].clone()}
    except ImportError:  # pragma: no cover - service-only install
        backends = {"numpy": lambda u: table[u].copy()}
    for backend, fn in backends.items():
        times = [evaluate(fn, split, "test").seconds for _ in range(args.repeats)]
        rows.append(
            {
                "backend": backend,
                "users": split.n_users,
                "items": split.n_items,
                "best_s": min(times),
                "median_s": float(np.median(times)),
            }
        )
    print_table(rows, f"Full-ranking evaluation time on {args.dataset}")
    record("eval_speed", {"table": rows}, {"dataset": args.dataset, "repeats": args.repeats})


if __name__ == "__main__":
    main()
