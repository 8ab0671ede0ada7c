"""``profilerec-data``: inspect, import and split datasets.

profilerec-data info movielens-100k
profilerec-data import --interactions ratings.csv --items items.csv \
        [--users users.csv] --out var/datasets/mine
profilerec-data split movielens-100k --method random --seed 2024 --out var/splits/ml-random-2024
"""

from __future__ import annotations

import argparse
import json
import sys

from rec_contract.logs import configure_logging
from training.data.errors import DataFormatError
from training.data.generic import load_generic
from training.data.registry import default_split_method, load_dataset
from training.data.split import split_dataset


def main(argv: list[str] | None = None) -> None:
    configure_logging(fmt="text")
    parser = argparse.ArgumentParser(
        prog="profilerec-data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", help="data root (default: $PROFILEREC_DATA_DIR or ../shared/data)")
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="load a dataset and print its summary and ingest report")
    info.add_argument("dataset")

    imp = sub.add_parser("import", help="import CSV/Parquet/JSONL files into the canonical form")
    imp.add_argument("--interactions", required=True)
    imp.add_argument("--items")
    imp.add_argument("--users")
    imp.add_argument("--name", default="custom")
    imp.add_argument("--min-rating", type=float)
    imp.add_argument("--unknown-items", choices=["error", "drop"], default="error")
    imp.add_argument("--out", required=True)

    spl = sub.add_parser("split", help="split a dataset and save the split")
    spl.add_argument("dataset")
    spl.add_argument("--method", choices=["random", "temporal", "predefined"])
    spl.add_argument(
        "--ratios", type=float, nargs=3, default=(0.6, 0.2, 0.2), metavar=("TRAIN", "VALID", "TEST")
    )
    spl.add_argument("--seed", type=int, default=2024)
    spl.add_argument("--out", required=True)

    args = parser.parse_args(argv)
    try:
        if args.command == "info":
            dataset = load_dataset(args.dataset, args.data_dir)
            print(json.dumps({"summary": dataset.summary(), "report": dataset.report}, indent=2))
        elif args.command == "import":
            dataset = load_generic(
                args.interactions,
                args.items,
                args.users,
                name=args.name,
                min_rating=args.min_rating,
                unknown_items=args.unknown_items,
            )
            dataset.save(args.out)
            print(
                json.dumps(
                    {"saved": args.out, "summary": dataset.summary(), "report": dataset.report}, indent=2
                )
            )
        elif args.command == "split":
            dataset = load_dataset(args.dataset, args.data_dir)
            split = split_dataset(
                dataset, args.method or default_split_method(args.dataset), tuple(args.ratios), args.seed
            )
            split.save(args.out)
            print(json.dumps({"saved": args.out, **split.summary()}, indent=2))
    except (DataFormatError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
