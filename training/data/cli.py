"""``profilerec-data``: inspect, import and split datasets.

profilerec-data info movielens-100k
profilerec-data import --interactions ratings.csv --items items.csv \
        [--users users.csv] --out var/datasets/mine
profilerec-data import --interactions ml-latest-small/ratings.csv --items ml-latest-small/movies.csv \
        --user-col userId --item-col movieId --item-id-col movieId --categories-col genres \
        --min-rating 4 --out var/datasets/ml-latest-small
profilerec-data split movielens-100k --method random --seed 2024 --out var/splits/ml-random-2024
"""

from __future__ import annotations

import argparse
import json
import sys

from rec_contract.logs import configure_logging
from training.data.errors import DataFormatError
from training.data.generic import ColumnNames, load_generic
from training.data.registry import default_split_method, load_dataset
from training.data.split import split_dataset


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="profilerec-data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", help="data root (default: $PROFILEREC_DATA_DIR or ../shared/data)")
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="load a dataset and print its summary and ingest report")
    info.add_argument("dataset", help="a known dataset name (e.g. movielens-100k) or a saved dataset folder")

    imp = sub.add_parser(
        "import",
        help="import CSV/Parquet/JSONL files into the canonical form",
        description="Import interactions (and optionally items and users) from CSV/TSV, Parquet or JSON "
        "lines. Column names default to the canonical ones; the --*-col flags read other names.",
    )
    imp.add_argument(
        "--interactions", required=True, help="interactions file: one (user, item) row per interaction"
    )
    imp.add_argument("--items", help="item file (titles, categories, description): needed for profiles")
    imp.add_argument("--users", help="user file: user ids plus attribute columns")
    imp.add_argument("--name", default="custom", help="dataset name stored with it (default: %(default)s)")
    imp.add_argument(
        "--min-rating", type=float, help="rows with a lower rating are not used as positives (needs ratings)"
    )
    imp.add_argument(
        "--unknown-items",
        choices=["error", "drop"],
        default="error",
        help="interactions with items missing from --items: fail, or drop and count (default: %(default)s)",
    )
    imp.add_argument("--out", required=True, help="output folder (Parquet files plus dataset.json)")
    cols = imp.add_argument_group("column names (defaults: the canonical names)")
    defaults = ColumnNames()
    for flag, field, what in (
        ("--user-col", "user", "interactions: user id"),
        ("--item-col", "item", "interactions: item id"),
        ("--rating-col", "rating", "interactions: rating (used with --min-rating)"),
        ("--time-col", "timestamp", "interactions: unix seconds or ISO-8601 time"),
        ("--split-col", "split", "interactions: train/valid/test label (becomes the predefined split)"),
        ("--item-id-col", "item_id", "items: item id"),
        ("--title-col", "title", "items: title"),
        (
            "--categories-col",
            "categories",
            "items: categories (a list, or a string split on --categories-sep)",
        ),
        ("--description-col", "description", "items: description"),
        ("--user-id-col", "user_id", "users: user id"),
    ):
        cols.add_argument(
            flag, dest=field, default=getattr(defaults, field), help=f"{what} (default: %(default)s)"
        )
    cols.add_argument(
        "--categories-sep",
        dest="categories_sep",
        default=defaults.categories_sep,
        help="separator of categories in a string column (default: %(default)s)",
    )

    spl = sub.add_parser("split", help="split a dataset and save the split")
    spl.add_argument("dataset", help="a known dataset name or a saved dataset folder")
    spl.add_argument(
        "--method",
        choices=["random", "temporal", "predefined"],
        help="how to split (default: the usual one for a known dataset, random for a saved folder)",
    )
    spl.add_argument(
        "--ratios",
        type=float,
        nargs=3,
        default=(0.6, 0.2, 0.2),
        metavar=("TRAIN", "VALID", "TEST"),
        help="train/valid/test fractions (random and temporal; default: 0.6 0.2 0.2)",
    )
    spl.add_argument("--seed", type=int, default=2024, help="random seed (default: %(default)s)")
    spl.add_argument("--out", required=True, help="output folder of the split")

    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    configure_logging(fmt="text")
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
                columns=ColumnNames(**{f: getattr(args, f) for f in ColumnNames.__dataclass_fields__}),
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
