"""How much does a profile store know that the collaborative model does not?

For one dataset, one profile store and the finished base runs of ``train_quality`` (one per seed):

1. **Profile space**: per entity type, the mean pairwise cosine of the entities' mean-pooled profile
   vectors (raw and centred: a high raw figure means the vectors share a large common component, e.g.
   a sentence template), the mean cosine between one entity's K profiles, and the effective rank
   (participation ratio of the centred covariance's eigenvalues).
2. **Profiles alone**: :class:`training.baselines.profile_only.ProfileOnly` (a mapping MLP over the
   mean-pooled profiles, no ID embeddings, BPR, early stopping on validation) per seed.
3. **Complementarity**: the base model's scores blended with ProfileOnly's, ``(1 - w) z(base) +
   w z(profile)`` with ``z`` per-user standardisation, ``w`` chosen on validation Recall@20. A post-hoc
   blend of two separately trained models is an upper-bound-style probe of what the profiles add to
   the collaborative model (a fused model need not reach it, and can exceed it only by learning
   something neither model learns alone). For scale, the same blend of two base runs of different
   seeds (``w = 0.5``) shows what plain ensembling gives.

    python -m benchmarks train_quality --models lightgcn --variants base --seeds 2024 2025 2026 \\
        --epochs 1500 --eval-every 5 --patience 10 --threads 1 --hp lightgcn:lr=0.005
    python -m benchmarks profile_signal --profiles var/profiles/movielens-100k-extractive
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks.results import print_table, record
from benchmarks.train_quality import run_folder, runs_root

BLEND_WEIGHTS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5)


def profile_space(vectors: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Cosine and rank statistics of ``[N, K, d]`` profile vectors (entities without profiles skipped)."""
    present = mask.any(axis=1)
    vectors, mask = vectors[present], mask[present]
    weights = mask[..., None].astype(np.float64)
    pooled = (vectors * weights).sum(axis=1) / weights.sum(axis=1)

    def mean_pairwise_cosine(x: np.ndarray) -> float:
        unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        sims = unit @ unit.T
        n = len(x)
        return float((sims.sum() - np.trace(sims)) / max(n * (n - 1), 1))

    centred = pooled - pooled.mean(axis=0)
    eigen = np.clip(np.linalg.eigvalsh(centred.T @ centred / max(len(centred) - 1, 1)), 0.0, None)
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)
    within = unit @ unit.transpose(0, 2, 1)  # [N, K, K]
    pairs = mask[:, :, None] & mask[:, None, :] & ~np.eye(mask.shape[1], dtype=bool)
    return {
        "entities": len(pooled),
        "cos_raw": mean_pairwise_cosine(pooled),
        "cos_centred": mean_pairwise_cosine(centred),
        "cos_within_entity": float(within[pairs].mean()) if pairs.any() else float("nan"),
        "effective_rank": float(eigen.sum() ** 2 / max(float((eigen**2).sum()), 1e-30)),
    }


def standardised(score: Callable[[np.ndarray], Any]) -> Callable[[np.ndarray], np.ndarray]:
    """``score`` with every user's row standardised to mean 0 and standard deviation 1."""

    def scored(users: np.ndarray) -> np.ndarray:
        values = score(users)
        rows = np.asarray(values.numpy() if hasattr(values, "numpy") else values, dtype=np.float64)
        return (rows - rows.mean(axis=1, keepdims=True)) / np.maximum(rows.std(axis=1, keepdims=True), 1e-12)

    return scored


def blend(
    first: Callable[[np.ndarray], np.ndarray], second: Callable[[np.ndarray], np.ndarray], weight: float
) -> Callable[[np.ndarray], np.ndarray]:
    def scored(users: np.ndarray) -> np.ndarray:
        return (1.0 - weight) * first(users) + weight * second(users)

    return scored


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="movielens-100k", help="dataset the profiles were written for")
    parser.add_argument("--profiles", required=True, help="profile store folder")
    parser.add_argument("--k", type=int, default=4, help="profiles per entity (ProEx K)")
    parser.add_argument(
        "--model",
        choices=("lightgcn", "multvae"),
        default="lightgcn",
        help="model trained with and without the profiles",
    )
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=[2024, 2025, 2026],
        help="training seeds (one run per seed and variant)",
    )
    parser.add_argument(
        "--runs-dir",
        default=None,
        help="base runs of train_quality (default: $PROFILEREC_WORK_DIR/runs/train_quality)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--note", default="", help="a note stored with the recorded figures")
    args = parser.parse_args(argv)

    import torch

    from rec_contract.logs import configure_logging
    from training.baselines.profile_only import ProfileOnly, ProfileOnlyConfig
    from training.data import Split, load_dataset
    from training.evaluation import evaluate
    from training.profiles import load_profile_inputs
    from training.runs import SPLIT_DIR, load_run

    configure_logging(level="WARNING")
    torch.set_num_threads(args.threads)
    runs_dir = runs_root(args.runs_dir)
    run_dirs = [run_folder(runs_dir, args.dataset, args.model, "base", seed) for seed in args.seeds]
    missing = [str(d) for d in run_dirs if not (d / "metrics.json").exists()]
    if missing:
        raise SystemExit(
            "profile_signal blends with finished base runs; missing: "
            + ", ".join(missing)
            + f"\ntrain them first: python -m benchmarks train_quality --datasets {args.dataset} "
            f"--models {args.model} --variants base --seeds {' '.join(map(str, args.seeds))} "
            f"--runs-dir {runs_dir}"
        )
    started = time.perf_counter()
    dataset = load_dataset(args.dataset)
    profiles = load_profile_inputs(args.profiles, dataset, args.k)
    space = [
        {"entity": "user", **profile_space(profiles.user_vectors, profiles.user_mask)},
        {"entity": "item", **profile_space(profiles.item_vectors, profiles.item_mask)},
    ]
    print_table(space, f"Profile space of {args.profiles}")

    bases = []
    for run_dir in run_dirs:
        model, _ = load_run(run_dir)
        bases.append((standardised(model.make_scorer()), Split.load(run_dir / SPLIT_DIR)))
    rows: list[dict[str, Any]] = []
    for index, (seed, (base, split)) in enumerate(zip(args.seeds, bases, strict=True)):
        seed_started = time.perf_counter()
        profile_only = ProfileOnly(profiles, ProfileOnlyConfig(seed=seed))
        fit = profile_only.fit(split)
        alone = evaluate(profile_only.score, split, "test")
        other = standardised(profile_only.score)
        valid = {w: evaluate(blend(base, other, w), split, "valid")["recall@20"] for w in BLEND_WEIGHTS}
        weight = max(BLEND_WEIGHTS, key=lambda w: (valid[w], -w))
        base_test = evaluate(base, split, "test")
        blended = evaluate(blend(base, other, weight), split, "test")
        partner = bases[(index + 1) % len(bases)][0]
        ensemble = evaluate(blend(base, partner, 0.5), split, "test") if len(bases) > 1 else None
        rows.append(
            {
                "seed": seed,
                "profile_only_R@20": alone["recall@20"],
                "profile_only_N@20": alone["ndcg@20"],
                "profile_only_epoch": fit.best_epoch,
                "base_R@20": base_test["recall@20"],
                "base_N@20": base_test["ndcg@20"],
                "blend_w": weight,
                "blend_R@20": blended["recall@20"],
                "blend_N@20": blended["ndcg@20"],
                "two_seeds_R@20": ensemble["recall@20"] if ensemble else float("nan"),
                "two_seeds_N@20": ensemble["ndcg@20"] if ensemble else float("nan"),
                "seconds": time.perf_counter() - seed_started,
            }
        )
        print(
            f"seed {seed}: profiles alone R@20 {alone['recall@20']:.4f}; base {base_test['recall@20']:.4f} "
            f"-> blend (w={weight}) {blended['recall@20']:.4f}",
            flush=True,
        )
    mean = {key: float(np.mean([r[key] for r in rows])) for key in rows[0] if key != "seed"}
    rows.append({"seed": "mean", **mean})
    gains = {
        "blend_R@20_%": 100.0 * (mean["blend_R@20"] / mean["base_R@20"] - 1.0),
        "blend_N@20_%": 100.0 * (mean["blend_N@20"] / mean["base_N@20"] - 1.0),
        "two_seeds_R@20_%": 100.0 * (mean["two_seeds_R@20"] / mean["base_R@20"] - 1.0),
        "two_seeds_N@20_%": 100.0 * (mean["two_seeds_N@20"] / mean["base_N@20"] - 1.0),
    }
    print_table(rows, f"Profiles alone and blended with base {args.model} (test, w chosen on validation)")
    print("relative to the base model:", ", ".join(f"{k} {v:+.2f}" for k, v in gains.items()))
    described = profiles.describe()  # hashes every profile vector: once
    record(
        "profile_signal",
        {
            "table": rows,
            **{f"{row['entity']}_{k}": v for row in space for k, v in row.items() if k != "entity"},
            **gains,
            "wall_seconds": time.perf_counter() - started,
        },
        {
            "dataset": args.dataset,
            "model": args.model,
            "seeds": args.seeds,
            "profiles": {
                k: described.get(k) for k in ("path", "version", "embedding_model", "k", "dim", "fingerprint")
            },
            "base_runs": [str(d) for d in run_dirs],
            "blend_weights": list(BLEND_WEIGHTS),
            "notes": [args.note] if args.note else [],
        },
    )


if __name__ == "__main__":
    main()
