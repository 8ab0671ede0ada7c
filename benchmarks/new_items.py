"""New items on MovieLens-100k, through the item-upsert path the service runs (issue 16, part 2).

A seeded 20% of the items is held out entirely (:func:`training.data.scarce.hold_out_items`): the
models are trained on the remaining catalogue (its own random 60/20/20 split, early stopping on its
validation Recall@20) and its extractive profile store is built from that training split only, so no
held-out item's interactions reach a model or a profile (a held-out item's own profile is its text plus
the most similar items by genre and era, as for any item without interactions). Each trained run is
exported to a bundle, served in-process (``benchmarks.served.service``: the FastAPI app, exact
retrieval), and every held-out item enters through ``PUT /v1/items/{id}`` with its title, genres and
its profile text (the store's facets joined), never its interactions.

Test: every interaction with a held-out item; evaluated users: those with at least one; candidates:
the held-out items; full ranking, Recall/NDCG@{10,20,40} (``training.evaluation``'s protocol).
Scores come from the running service's state: the item vectors the upserts wrote into the item index
and the user vectors of the service's own user tower (ONNX), inputs built by ``service.towers`` from
the profiles the service reads; a sample of users is also asked ``GET /v1/users/{id}/recommendations``
and the held-out items it returns must carry the same scores (``agreement``).

Rows: random (mean over 20 seeded shuffles); text similarity (the cosine between the mean content
vector of the user's training items and the new item's content vector, both from the bundle's text
encoder, ``rec_contract.content``); and per bundle (LightGCN, Mult-VAE; base and ProEx) each way of
placing a new item (``new_item_vectors``): ``tower`` (the bundle's item tower: ProEx LightGCN's own,
else a ridge regression from the text profile) and ``neighbours`` (the softmax-weighted mean of the
trained vectors of the nearest catalogue items by content, the service's default).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.served import ok, service
from rec_contract.atomic import atomic_write_text

HOLDOUT_FRACTION = 0.2
HOLDOUT_SEED = 2024
SPLIT_SEED = 2024
K_PROFILES = 4
KS = (10, 20, 40)
ROUTES = ("tower", "neighbours")
HYPERPARAMETERS: dict[str, dict[str, Any]] = {"lightgcn": {"lr": 0.005}}  # as the train_quality records
TEXT_CHARS = 4000  # the item upsert's text limit


def held_out(data_dir: str | Path | None = None) -> Any:
    """The seeded hold-out of MovieLens-100k (``training.data.scarce.HeldOutItems``) and the dataset."""
    from training.data import load_dataset
    from training.data.scarce import hold_out_items

    dataset = load_dataset("movielens-100k", data_dir)
    return hold_out_items(dataset, HOLDOUT_FRACTION, HOLDOUT_SEED), dataset


def prepare(root: Path, data_dir: str | Path | None = None) -> dict[str, Path]:
    """Write (once) the remaining catalogue as a dataset folder and its extractive profile store."""
    from offline_jobs.context import JobContext, _movielens_ratings
    from offline_jobs.jobs.builder import BuildOptions, build_profiles
    from rec_contract.profile_store import VECTORS_FILE
    from training.data import data_root, split_dataset
    from training.data.split import Split

    held, dataset = held_out(data_dir)
    folder, store = root / "dataset", root / "profiles"
    if not (folder / "dataset.json").exists():
        held.kept.save(folder)
    if not (store / VECTORS_FILE).exists():
        split = split_dataset(held.kept, "random", seed=SPLIT_SEED)
        # the kept catalogue's split in the full catalogue's item indices: the profiles of every item
        # (held-out ones included, which have no training interaction) come from this training split
        parts = {}
        for name in ("train", "valid", "test"):
            users, items = split.pairs(name)
            parts[name] = (users, held.kept_items[items].astype(np.int32))
        full = Split.from_pairs(dataset.n_users, dataset.n_items, parts, "random", {"seed": SPLIT_SEED})
        ratings = _movielens_ratings(dataset, full.train, data_root(data_dir))
        ctx = JobContext(dataset, full, "random", SPLIT_SEED, ratings)
        version = f"movielens-100k-without-{len(held.item_ids)}-items-extractive-k{K_PROFILES}"
        options = BuildOptions("extractive", K_PROFILES, version, show_progress=False)
        build_profiles(ctx, range(dataset.n_users), range(dataset.n_items), store, options)
    return {"dataset": folder, "profiles": store}


def run_name(model: str, variant: str, seed: int) -> str:
    return f"{model}-{variant}-seed{seed}"


def run_spec(root: Path, model: str, variant: str, seed: int, train: Any) -> Any:
    from training.proex import proex_defaults
    from training.runs import RunSpec

    return RunSpec(
        dataset=str(root / "dataset"),
        model=model,
        proex=proex_defaults(model, n_profiles=K_PROFILES) if variant == "proex" else None,
        profiles_path=str(root / "profiles") if variant == "proex" else None,
        hyperparameters=HYPERPARAMETERS.get(model, {}),
        train=replace(train, seed=seed),
        split_seed=SPLIT_SEED,
        out=str(root / "runs" / run_name(model, variant, seed)),
        baselines=None,
    )


def train_and_export(
    root: Path, model: str, variant: str, seed: int, train: Any, text_encoder_dir: Path
) -> Path:
    """Train (or reuse) one run on the remaining catalogue and export it (once) to its own bundles
    root, made live there; returns that bundles root."""
    from benchmarks.train_quality import run_one
    from rec_contract.bundle import CURRENT_POINTER, promote
    from training.export import ExportOptions, export_bundle

    spec = run_spec(root, model, variant, seed, train)
    run_one(spec, reuse=True)
    bundles = root / "bundles" / run_name(model, variant, seed)
    if not (bundles / CURRENT_POINTER).exists():
        bundle = export_bundle(
            spec.run_dir(),
            ExportOptions(
                bundles_root=bundles,
                text_encoder_dir=text_encoder_dir,
                version=run_name(model, variant, seed),
            ),
        )
        promote(bundles, bundle.name)
    return bundles


def item_texts(store: Path) -> dict[str, str]:
    """Each item's profile text: its facets in slot order, joined."""
    from rec_contract.profile_store import read_profiles

    slots: dict[str, list[tuple[int, str]]] = {}
    for row in read_profiles(store):
        if row["entity_type"] == "item":
            slots.setdefault(str(row["entity_id"]), []).append((int(row["slot"]), str(row["text"])))
    return {item: " ".join(text for _, text in sorted(rows))[:TEXT_CHARS] for item, rows in slots.items()}


def _metrics(scores: np.ndarray, truth: Any) -> dict[str, float]:
    from training.evaluation.metrics import rank_metrics, top_k

    values = rank_metrics(top_k(scores, max(KS)), truth, KS)
    return {key: float(arr.mean()) for key, arr in values.items()}


def random_metrics(truth: Any, rounds: int = 20, seed: int = 0) -> dict[str, float]:
    """The mean metrics of ``rounds`` seeded random rankings of the candidates."""
    rng = np.random.default_rng(seed)
    runs = [_metrics(rng.random(truth.shape), truth) for _ in range(rounds)]
    return {key: float(np.mean([r[key] for r in runs])) for key in runs[0]}


def evaluate_bundle(
    bundles: Path,
    held: Any,
    texts: dict[str, str],
    meta: dict[str, dict[str, Any]],
    scratch: Path,
    route: str,
    agreement_users: int = 20,
) -> dict[str, Any]:
    """Add the held-out items to the served bundle through ``PUT /v1/items`` (placed by ``route``) and
    rank them for every user who interacted with one; also the text-similarity baseline (it needs
    the bundle's content vectors: the same for every route)."""
    from service.towers import user_vector

    truth_all = held.truth()
    users = np.flatnonzero(np.diff(truth_all.indptr) > 0)
    truth = truth_all[users]
    with service(bundles, scratch, new_item_vectors=route) as client:
        sources: dict[str, int] = {}
        for item_id in held.item_ids:
            body = {**meta[item_id], "text": texts.get(item_id, "")}
            answer = ok(client.put(f"/v1/items/{item_id}", json=body))
            sources[answer["vector_source"]] = sources.get(answer["vector_source"], 0) + 1
        runtime = client.app.state.runtime
        live = runtime.holder.require()
        bundle = live.bundle
        portal = client.portal
        found = portal.call(live.items.vectors, held.item_ids)
        items = np.stack([found[i] for i in held.item_ids]).astype(np.float32)
        user_ids = [bundle.user_ids[u] for u in users]
        vectors = []
        for u, user_id in zip(users, user_ids, strict=True):
            profiles = portal.call(live.profiles.get, "user", user_id)
            vectors.append(user_vector(bundle, int(u), [], profiles.vectors if profiles else None))
        scores = np.stack(vectors) @ items.T
        figures = _metrics(scores, truth)
        # the service's own answers for a sample of users carry the scores computed here: for every
        # item returned, the user vector above times the item's vector in the item index (the held-out
        # items among them: exactly the scores ranked above)
        rng = np.random.default_rng(0)
        index = {item: j for j, item in enumerate(held.item_ids)}
        worst, compared, compared_new = 0.0, 0, 0
        for row in sorted(rng.choice(len(users), size=min(agreement_users, len(users)), replace=False)):
            answer = ok(client.get(f"/v1/users/{user_ids[row]}/recommendations", params={"n": 100}))
            stored = portal.call(live.items.vectors, [entry["item_id"] for entry in answer["items"]])
            for entry in answer["items"]:
                item_id = entry["item_id"]
                if item_id in index:
                    ours = float(scores[row, index[item_id]])
                    compared_new += 1
                else:
                    ours = float(vectors[row] @ stored[item_id])
                worst = max(worst, abs(entry["score"] - ours))
                compared += 1
        text_figures = None
        if live.content_index is not None:
            content = portal.call(live.content_index.vectors, held.item_ids)
            new = np.stack([content[i] for i in held.item_ids]).astype(np.float32)
            catalogue = np.asarray(live.content.item_content, np.float32)
            # the user's training items (the bundle's model input history)
            profile = np.stack([catalogue[bundle.history.items_of(int(u))].sum(axis=0) for u in users])
            profile /= np.maximum(np.linalg.norm(profile, axis=1, keepdims=True), 1e-12)
            text_figures = _metrics(profile @ new.T, truth)
    return {
        "metrics": figures,
        "text_similarity": text_figures,
        "users": len(users),
        "candidates": len(held.item_ids),
        "vector_sources": sources,
        "agreement": {
            "users": min(agreement_users, len(users)),
            "scores_compared": compared,
            "new_items_compared": compared_new,
            "max_abs": worst,
        },
    }


def item_meta(dataset: Any, held: Any) -> dict[str, dict[str, Any]]:
    """The upsert body's title and categories of each held-out item."""
    return {
        item_id: {
            "title": str(dataset.items["title"].iloc[int(i)]),
            "categories": [str(c) for c in dataset.items["categories"].iloc[int(i)]],
        }
        for item_id, i in zip(held.item_ids, held.held_items, strict=True)
    }


def summarise(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Table rows, mean over seeds: random, text similarity, then each model/variant/route; each with
    its ratio to random and its relative change against the strongest non-profile row (random, text
    similarity, the base models' routes)."""

    def row(name: str, entries: list[dict[str, float]], profile: bool, **extra: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"row": name, "profiles": profile, "seeds": len(entries)}
        for k in KS[1:2]:
            for metric in ("recall", "ndcg"):
                key = f"{metric}@{k}"
                out[f"{metric[0].upper()}@{k}"] = round(float(np.mean([e[key] for e in entries])), 4)
        out["R@20_per_seed"] = " ".join(f"{e['recall@20']:.4f}" for e in entries)
        return {**out, **extra}

    by_row: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    per_seed: dict[int, dict[str, Any]] = {}  # random and text similarity: the same in every bundle of a seed
    for res in results:
        by_row.setdefault((res["model"], res["variant"], res["route"]), []).append(res)
        if res["text_similarity"] is not None:
            per_seed.setdefault(res["seed"], res)
    rows = [
        row("random", [r["random"] for r in per_seed.values()], False, service_agreement_max_abs=""),
        row(
            "text similarity to the user's history",
            [r["text_similarity"] for r in per_seed.values()],
            False,
            service_agreement_max_abs="",
        ),
    ]
    for (model, variant, route), entries in sorted(by_row.items()):
        agreement = max(e["agreement"]["max_abs"] for e in entries)
        rows.append(
            row(
                f"{model} {variant}: {route}",
                [e["metrics"] for e in entries],
                variant == "proex",
                service_agreement_max_abs=f"{agreement:.1e}",
            )
        )
    random_r20 = rows[0]["R@20"]
    strongest = max((r for r in rows if not r["profiles"]), key=lambda r: r["R@20"])
    for r in rows:
        r["x_random_R@20"] = round(r["R@20"] / random_r20, 2) if random_r20 else float("nan")
        r["vs_text_similarity_%"] = round(100 * (r["R@20"] - rows[1]["R@20"]) / rows[1]["R@20"], 2)
        r["vs_strongest_non_profile_%"] = round(100 * (r["R@20"] - strongest["R@20"]) / strongest["R@20"], 2)
    return rows


def evaluate_all(
    root: Path,
    runs: Sequence[tuple[str, str, int]],
    scratch: Path,
    data_dir: str | Path | None = None,
    log: Any = print,
) -> list[dict[str, Any]]:
    """Evaluate every exported bundle of ``runs`` (model, variant, seed) on both routes. Each
    evaluation is kept in ``<root>/evaluations/`` with its bundle version and the held-out items, and
    reused while they match (the part resumes like its training)."""
    from rec_contract.bundle import resolve_pointer

    held, dataset = held_out(data_dir)
    texts = item_texts(root / "profiles")
    meta = item_meta(dataset, held)
    truth = held.truth()
    rand = random_metrics(truth[np.flatnonzero(np.diff(truth.indptr) > 0)])
    key = hashlib.sha256("\x1f".join(held.item_ids).encode()).hexdigest()[:16]
    results = []
    for model, variant, seed in runs:
        bundles = root / "bundles" / run_name(model, variant, seed)
        if not (bundles / "current").exists():
            log(f"{run_name(model, variant, seed)}: no bundle yet, left out")
            continue
        version = resolve_pointer(bundles).name
        for route in ROUTES:
            name = f"{run_name(model, variant, seed)}-{route}"
            cache = root / "evaluations" / f"{name}.json"
            kept = json.loads(cache.read_text()) if cache.exists() else {}
            if kept.get("bundle") == version and kept.get("held_out") == key:
                res = kept["result"]
            else:
                res = evaluate_bundle(bundles, held, texts, meta, scratch / name, route)
                cache.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_text(cache, json.dumps({"bundle": version, "held_out": key, "result": res}))
            res.update(model=model, variant=variant, seed=seed, route=route, random=rand, bundle=version)
            log(f"{name}: R@20 {res['metrics']['recall@20']:.4f} (agreement {res['agreement']})")
            results.append(res)
    return results
