"""Where profiles and text must pay: cold-start quality measured through what the service serves.

``python -m benchmarks cold_start [--bundles-root var/bundles] [--parts genres,copies,thin_users]``

Every figure comes from the running service's own code (the FastAPI app in-process, on a private copy
of the online state, the bundle read-only), so what is measured is what is served:

* ``genres``: a one-sentence request naming a genre ("I want to watch a good western") for each of the
  catalogue's genres: how many of the top 20 are of that genre, for the service as configured, for the
  user tower alone (``text_weight`` 0) and for the popularity top 20;
* ``copies``: 20 seeded films with at least 50 ratings are added again through ``PUT /v1/items`` under a
  new id (title, genres, the film's first profile text; no interactions). For the users who rated the
  original (up to ``--raters`` each), the copy's rank in their personalised top 100 (101 when absent,
  the answer's limit): median, and the shares within the top 20 and 100; for each way of placing a new item
  (``new_item_vectors``: ``neighbours``, ``tower``);
* ``thin_users``: seeded users with at least 10 interactions keep only 1, 3 or 5 of them, sent as
  ``liked_items`` to the cold-start path; the rest of their interactions are the truth (Recall and
  NDCG@20, the liked items excluded from every row's candidates). Beside: MostPop and item-kNN (cosine
  over the bundle's training interactions, summed over the liked items). Also text only, the user's
  demographic line from ``u.user`` ("I am a 24-year-old man working as a technician."), and 3 liked
  items with that line. These users are in the data the bundle was trained on (the cold-start path
  never sees their ids, but the item-item statistics of the model and of item-kNN include them alike).
* ``mind``: zero-shot items on MIND, in :mod:`benchmarks.cold_start_mind` (it trains and exports its own
  bundles; the options this parser does not know are its own).
* ``new_items``: a seeded 20% of the items held out entirely, the models trained without them, each
  added back through ``PUT /v1/items`` by text only and ranked among the held-out items for the users
  who interacted with them (:mod:`benchmarks.new_items`; trains and exports its own bundles under
  ``--work``, not the ``--bundles-root`` one);
* ``sparsity``: base and ProEx LightGCN and Mult-VAE trained on 10-100% of each user's training
  interactions (:mod:`benchmarks.sparsity`; its own runs under ``--work``, profile store ``--profiles``).

``new_items`` and ``sparsity`` train (``--seeds``; finished runs are reused, so they resume);
``--no-train`` records only what has finished and names what is missing.

Figures are recorded, never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.results import print_table, record
from benchmarks.served import ok, service

GENRE_TEMPLATE = "I want to watch a good {genre}"
TOP = 20


def ids_of(answer: dict[str, Any]) -> list[str]:
    return [item["item_id"] for item in answer["items"]]


class Bundle:
    """What the baselines need from the live bundle: ids, metadata, interactions, profile texts."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.manifest = json.loads((folder / "manifest.json").read_text())
        self.users = [str(u) for u in json.loads((folder / "users.json").read_text())]
        self.items = [str(i) for i in json.loads((folder / "items.json").read_text())]
        self.meta = json.loads((folder / "items_meta.json").read_text())
        self.popularity = np.array([int(m.get("popularity", 0)) for m in self.meta])
        self.popular = np.argsort(-self.popularity, kind="stable")
        self.train = self._dense("interactions.npz")
        self.seen = self._dense("seen.npz") if (folder / "seen.npz").exists() else self.train
        self.texts: dict[str, list[str]] = {}
        path = folder / "profile_texts.jsonl"
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                row = json.loads(line)
                if row["entity_type"] == "item":
                    self.texts[row["entity_id"]] = row["texts"]

    def _dense(self, name: str) -> np.ndarray:
        with np.load(self.folder / name) as z:
            indptr, indices = z["indptr"], z["indices"]
        out = np.zeros((len(self.users), len(self.items)), np.float32)
        for u in range(len(self.users)):
            out[u, indices[indptr[u] : indptr[u + 1]]] = 1.0
        return out

    @property
    def genres(self) -> list[str]:
        return sorted({g for m in self.meta for g in m["categories"]} - {"unknown", ""})


# ---------------------------------------------------------------- genres
def part_genres(bundle: Bundle, root: Path, scratch: Path) -> list[dict[str, Any]]:
    rows = []
    with (
        service(root, scratch / "genres") as served,
        service(root, scratch / "tower", text_weight=0.0) as tower,
    ):
        for genre in bundle.genres:
            text = GENRE_TEMPLATE.format(genre=genre.lower())
            counts = {}
            for name, client in (("service", served), ("tower_only", tower)):
                answer = ok(client.post("/v1/recommendations", json={"text": text, "n": TOP}))
                counts[name] = sum(genre in item["categories"] for item in answer["items"])
            popular = sum(genre in bundle.meta[i]["categories"] for i in bundle.popular[:TOP])
            in_catalogue = sum(genre in m["categories"] for m in bundle.meta)
            rows.append(
                {"genre": genre, **counts, "popular_top20": popular, "catalogue_titles": in_catalogue}
            )
    return rows


# ---------------------------------------------------------------- copies
def part_copies(
    bundle: Bundle, root: Path, scratch: Path, films: int, raters: int, seed: int
) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    eligible = [i for i in range(len(bundle.items)) if bundle.seen[:, i].sum() >= 50]
    chosen = sorted(rng.sample(eligible, min(films, len(eligible))))
    rows = []
    for method in ("neighbours", "tower"):
        ranks: list[int] = []
        started = time.perf_counter()
        with service(root, scratch / f"copies-{method}", new_item_vectors=method) as client:
            for i in chosen:
                item_id, meta = bundle.items[i], bundle.meta[i]
                text = (bundle.texts.get(item_id) or [meta["title"]])[0]
                body = {"title": meta["title"], "categories": meta["categories"], "text": text[:4000]}
                copy_id = f"copy-of-{item_id}"
                ok(client.put(f"/v1/items/{copy_id}", json=body))
                who = [int(u) for u in np.flatnonzero(bundle.seen[:, i])]
                for u in rng.sample(who, min(raters, len(who))):
                    answer = ok(client.get(f"/v1/users/{bundle.users[u]}/recommendations", params={"n": 100}))
                    found = ids_of(answer)
                    ranks.append(found.index(copy_id) + 1 if copy_id in found else 101)
        arr = np.array(ranks)
        rows.append(
            {
                "new_item_vectors": method,
                "films": len(chosen),
                "pairs": len(ranks),
                "median_rank": float(np.median(arr)) if np.median(arr) <= 100 else ">100",
                "share_top100": round(float((arr <= 100).mean()), 4),
                "share_top20": round(float((arr <= TOP).mean()), 4),
                "catalogue": len(bundle.items),
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
    return rows


# ---------------------------------------------------------------- thin users
def demographic_lines(data_dir: Path) -> dict[str, str]:
    path = data_dir / "movielens-100k" / "u.user"
    lines: dict[str, str] = {}
    if not path.exists():
        return lines
    for line in path.read_text(encoding="latin-1").splitlines():
        uid, age, sex, occupation, _zip = line.split("|")
        person = "man" if sex == "M" else "woman"
        article = "an" if occupation[:1] in "aeiou" else "a"
        lines[uid] = f"I am a {age}-year-old {person} working as {article} {occupation}."
    return lines


def metrics(ranked: Sequence[int], truth: set[int]) -> tuple[float, float]:
    top = list(ranked)[:TOP]
    hits = [1.0 if i in truth else 0.0 for i in top]
    recall = sum(hits) / min(TOP, len(truth))
    dcg = sum(h / np.log2(r + 2) for r, h in enumerate(hits))
    idcg = sum(1.0 / np.log2(r + 2) for r in range(min(TOP, len(truth))))
    return recall, dcg / idcg


def top_excluding(scores: np.ndarray, blocked: Sequence[int]) -> list[int]:
    s = scores.astype(np.float64).copy()
    s[list(blocked)] = -np.inf
    return [int(i) for i in np.argsort(-s, kind="stable")[:TOP]]


def part_thin_users(
    bundle: Bundle, root: Path, scratch: Path, data_dir: Path, users: int, seed: int
) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    counts = bundle.seen.sum(axis=1)
    eligible = [u for u in range(len(bundle.users)) if counts[u] >= 10]
    sample = sorted(rng.sample(eligible, min(users, len(eligible))))
    index = {item: i for i, item in enumerate(bundle.items)}
    lines = demographic_lines(data_dir)
    norms = np.sqrt(bundle.train.sum(axis=0)) + 1e-9
    totals: dict[str, list[tuple[float, float]]] = {}

    def add(row: str, ranked: Sequence[int], truth: set[int]) -> None:
        totals.setdefault(row, []).append(metrics(ranked, truth))

    with service(root, scratch / "thin") as client:
        for u in sample:
            items = [int(i) for i in np.flatnonzero(bundle.seen[u])]
            rng.shuffle(items)
            for k in (1, 3, 5):
                liked, truth = items[:k], set(items[k:])
                liked_ids = [bundle.items[i] for i in liked]
                answer = ok(client.post("/v1/recommendations", json={"liked_items": liked_ids, "n": TOP}))
                add(f"liked {k}: service", [index[i] for i in ids_of(answer) if i in index], truth)
                add(f"liked {k}: MostPop", top_excluding(bundle.popularity, liked), truth)
                co = bundle.train[:, liked].T @ bundle.train  # [k, items] co-occurrence
                knn = (co / (norms[liked][:, None] * norms[None, :])).sum(axis=0)
                add(f"liked {k}: item-kNN", top_excluding(knn, liked), truth)
            line = lines.get(bundle.users[u])
            if line is not None and bundle.manifest.get("proex"):
                truth = set(items)
                answer = ok(client.post("/v1/recommendations", json={"text": line, "n": TOP}))
                add("text (demographics): service", [index[i] for i in ids_of(answer) if i in index], truth)
                add("text (demographics): MostPop", top_excluding(bundle.popularity, []), truth)
                liked, truth = items[:3], set(items[3:])
                body = {"liked_items": [bundle.items[i] for i in liked], "text": line, "n": TOP}
                answer = ok(client.post("/v1/recommendations", json=body))
                add("liked 3 + text: service", [index[i] for i in ids_of(answer) if i in index], truth)
    return [
        {
            "row": name,
            "users": len(values),
            "recall@20": round(float(np.mean([v[0] for v in values])), 4),
            "ndcg@20": round(float(np.mean([v[1] for v in values])), 4),
        }
        for name, values in totals.items()
    ]


PARTS = ("genres", "copies", "thin_users", "new_items", "sparsity", "mind")
BUNDLE_PARTS = ("genres", "copies", "thin_users")  # measured on the --bundles-root bundle


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks cold_start", description=__doc__.split("\n")[0]
    )
    work = Path(os.environ.get("PROFILEREC_WORK_DIR", "var"))
    parser.add_argument(
        "--bundles-root", type=Path, default=work / "bundles", help="read-only; `current` is used"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("PROFILEREC_DATA_DIR", "../shared/data")),
        help="dataset root (default: $PROFILEREC_DATA_DIR or ../shared/data)",
    )
    parser.add_argument(
        "--parts",
        default=",".join(BUNDLE_PARTS),
        help=f"comma-separated, of {', '.join(PARTS)} (default: the parts measured on the bundle; "
        "new_items, sparsity and mind train; mind's own options: python -m benchmarks.cold_start_mind -h)",
    )
    parser.add_argument("--films", type=int, default=20, help="copies: films added again")
    parser.add_argument("--raters", type=int, default=30, help="copies: raters asked per film")
    parser.add_argument("--users", type=int, default=200, help="thin_users: users")
    parser.add_argument("--seed", type=int, default=2024, help="random seed")
    parser.add_argument("--note", default="", help="free text recorded with the figures (e.g. machine load)")
    parser.add_argument(
        "--work", type=Path, default=work / "cold_start", help="new_items, sparsity: runs and bundles"
    )
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=[2024, 2025, 2026], help="new_items, sparsity: training seeds"
    )
    parser.add_argument(
        "--train", action=argparse.BooleanOptionalAction, default=True, help="train missing runs"
    )
    parser.add_argument(
        "--profiles", default=str(work / "profiles" / "movielens-100k-live"), help="sparsity: profile store"
    )
    parser.add_argument(
        "--text-encoder", type=Path, default=work / "text_encoder", help="new_items: for the export"
    )
    parser.add_argument("--epochs", type=int, default=1500, help="new_items, sparsity: maximum epochs")
    parser.add_argument("--eval-every", type=int, default=5, help="new_items, sparsity")
    parser.add_argument("--patience", type=int, default=10, help="new_items, sparsity")
    parser.add_argument("--threads", type=int, default=1, help="new_items, sparsity: torch threads")
    args, rest = parser.parse_known_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts: {sorted(unknown)}")
    if rest and "mind" not in parts:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if "mind" in parts:  # MIND trains its own bundles: the options not parsed here are its own
        from benchmarks import cold_start_mind

        given = sys.argv[1:] if argv is None else argv
        shared = []  # options both parsers know, passed on only when given
        for flag in ("--seeds", "--epochs", "--patience", "--seed", "--text-encoder", "--note"):
            if any(a == flag or a.startswith(flag + "=") for a in given):
                value = getattr(args, flag[2:].replace("-", "_"))
                shared += [flag, *(map(str, value) if isinstance(value, list) else [str(value)])]
        cold_start_mind.main([*rest, "--data-dir", str(args.data_dir), *shared])
        parts.remove("mind")
        if not parts:
            return
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    from rec_contract.bundle import resolve_pointer

    params: dict[str, Any] = {"seed": args.seed}
    bundle: Bundle | None = None
    if set(parts) & set(BUNDLE_PARTS):
        folder = resolve_pointer(args.bundles_root)
        bundle = Bundle(folder)
        print(f"bundle {folder.name} ({bundle.manifest['model_kind']}, proex={bundle.manifest['proex']})")
        params["bundle"] = folder.name
    scratch = Path(tempfile.mkdtemp(prefix="cold-start-"))
    if args.note:
        params["note"] = args.note

    def save(part: str, rows: list[dict[str, Any]], title: str, **extra: Any) -> None:
        print_table(rows, title)
        figures = {"part": part, "table": rows, **extra, "loadavg_1m": round(os.getloadavg()[0], 2)}
        record("cold_start", figures, {**params, **{k: getattr(args, k) for k in PART_PARAMS[part]}})

    try:
        if "new_items" in parts:
            rows, extra = part_new_items(args, scratch)
            save(
                "new_items",
                rows,
                "New items added through PUT /v1/items, ranked among the held-out items",
                **extra,
            )
        if "sparsity" in parts:
            rows, extra = part_sparsity(args)
            save("sparsity", rows, "Sparsity: base vs ProEx on a share of each user's training data", **extra)
        if bundle is None:
            return
        if "genres" in parts:
            rows = part_genres(bundle, args.bundles_root, scratch)
            wins = {
                name: sum(r[name] >= 10 for r in rows) for name in ("service", "tower_only", "popular_top20")
            }
            print(f"genres with >= 10 of {TOP}: {wins} of {len(rows)}")
            title = f'Text only: "{GENRE_TEMPLATE}", titles of that genre in the top {TOP}'
            save("genres", rows, title, genres_with_10_of_20=wins, genres=len(rows))
        if "copies" in parts:
            rows = part_copies(bundle, args.bundles_root, scratch, args.films, args.raters, args.seed)
            save(
                "copies",
                rows,
                "A copy of a film added through PUT /v1/items: its rank for the original's raters",
            )
        if "thin_users" in parts:
            rows = part_thin_users(bundle, args.bundles_root, scratch, args.data_dir, args.users, args.seed)
            save("thin_users", rows, "New and thin users through the cold-start path (full ranking)")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


PART_PARAMS = {
    "genres": [],
    "copies": ["films", "raters"],
    "thin_users": ["users"],
    "new_items": ["seeds", "epochs", "eval_every", "patience", "threads"],
    "sparsity": ["seeds", "profiles", "epochs", "eval_every", "patience", "threads"],
}


def _train_config(args: argparse.Namespace) -> Any:
    from training.models import TrainConfig

    return TrainConfig(
        epochs=args.epochs, eval_every=args.eval_every, patience=args.patience, threads=args.threads
    )


def part_new_items(args: argparse.Namespace, scratch: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from benchmarks import new_items

    root = args.work / "new_items"
    runs = [(m, v, s) for s in args.seeds for m in ("lightgcn", "multvae") for v in ("base", "proex")]
    if args.train:
        new_items.prepare(root, args.data_dir)
        for model, variant, seed in runs:
            new_items.train_and_export(root, model, variant, seed, _train_config(args), args.text_encoder)
    results = new_items.evaluate_all(root, runs, scratch, args.data_dir)
    rows = new_items.summarise(results)
    done = {(r["model"], r["variant"], r["seed"]) for r in results}
    missing = [new_items.run_name(*run) for run in runs if run not in done]
    first = results[0] if results else {}
    extra = {
        "users": first.get("users"),
        "candidates": first.get("candidates"),
        "holdout": {"fraction": new_items.HOLDOUT_FRACTION, "seed": new_items.HOLDOUT_SEED},
        "missing": missing,
    }
    return rows, extra


def part_sparsity(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from benchmarks import sparsity

    runs_dir = args.work / "sparsity"
    all_cells = sparsity.cells(args.seeds)
    specs = {
        c: sparsity.spec_of(c, runs_dir, args.profiles, _train_config(args), args.data_dir) for c in all_cells
    }
    results = sparsity.collect(all_cells, specs, args.train)
    rows, verdicts, missing = sparsity.table(results, args.seeds)
    for model, verdict in verdicts.items():
        print(f"{model}: ProEx {verdict}")
    if missing:
        print(f"missing runs ({len(missing)}): {', '.join(missing)}")
    return rows, {"proex_stops_helping": verdicts, "missing": missing, "runs": len(results)}


if __name__ == "__main__":
    main()
