"""Profile quality of the LLM profile jobs: how faithful the kept profiles are to the data.

On a fixed sample of MovieLens-100k (the demo's entities, the first 24 users and 24 items, plus a
seeded sample of further users and items), runs the real generation job (embedded SmolLM2-135M by
default) once per configuration and reports, per configuration:

* ``hallucinated_rate``: share of the kept profiles that name at least one title not grounded in the
  entity's data (:mod:`offline_jobs.profiles.grounding`; an extractive fallback counts as grounded: it is
  computed from the data);
* ``category_precision``: supported / mentioned genres, over every kept profile;
* ``fallback_rate``: share of the kept profiles that are extractive fallbacks;
* ``mean_cos_k``: mean pairwise cosine of an entity's K profile vectors (ProEx wants them diverse);
* ``profiles_per_s``: profiles / wall seconds of the job. Every configuration shares one generation
  cache; a configuration with the check on asks the same first requests as the one without it, so its
  cost is the check-off run's seconds plus its own (``wall_s_total``), and its profiles/s is taken
  over that total.

Configurations (``--configs``): ``off`` (the check off, ProEx prompts proex.toml: "before"), ``on``
(the check on), ``small`` (the check on, the small-model prompts proex-small.toml), ``small_best2``
(plus best of 2 candidates). The "leave one in" utility of each profile through a trained fused model
is not measured here. Run it alone: ``flock /tmp/profilerec-heavy.lock python -m benchmarks
profile_quality``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.results import print_table, record

CONFIGS: dict[str, dict[str, Any]] = {
    "off": {"grounding": False, "prompts": "proex", "candidates": 1, "cost_of": None},
    "on": {"grounding": True, "prompts": "proex", "candidates": 1, "cost_of": "off"},
    "small": {"grounding": True, "prompts": "proex-small", "candidates": 1, "cost_of": None},
    "small_best2": {"grounding": True, "prompts": "proex-small", "candidates": 2, "cost_of": "small"},
}


def sample(ctx: Any, n_users: int, n_items: int, seed: int) -> tuple[list[int], list[int]]:
    """The demo's first 24 users and items, plus a seeded sample of the others."""
    rng = np.random.default_rng(seed)
    ds = ctx.dataset
    demo_u, demo_i = list(range(min(24, ds.n_users))), list(range(min(24, ds.n_items)))
    rest_u = rng.permutation(np.arange(24, ds.n_users))[:n_users]
    rest_i = rng.permutation(np.arange(24, ds.n_items))[:n_items]
    return demo_u + sorted(int(u) for u in rest_u), demo_i + sorted(int(i) for i in rest_i)


def measure(folder: Path, ctx: Any) -> dict[str, Any]:
    """The quality figures of one generated profile store."""
    from offline_jobs.profiles.grounding import Grounder
    from rec_contract.profile_store import read_profiles, read_store_vectors

    grounder = Grounder(ctx)
    u_index, i_index = ctx.dataset.user_index(), ctx.dataset.item_index()
    rows = read_profiles(folder)
    hallucinated = supported = mentioned = fallbacks = 0
    for row in rows:
        is_item = row["entity_type"] == "item"
        index = (i_index if is_item else u_index)[row["entity_id"]]
        ref = grounder.item_reference(index) if is_item else grounder.user_reference(index)
        verdict = grounder.check(str(row["text"]), ref)
        if row["is_fallback"]:
            fallbacks += 1
        elif verdict.ungrounded:
            hallucinated += 1
        mentioned += len(verdict.categories)
        supported += sum(verdict.categories.values())
    cosines = []
    for _, _, vectors in read_store_vectors(folder)[0]:
        if len(vectors) > 1:
            sims = vectors @ vectors.T
            upper = sims[np.triu_indices(len(vectors), 1)]
            cosines.append(float(upper.mean()))
    n = max(1, len(rows))
    return {
        "profiles": len(rows),
        "hallucinated_rate": round(hallucinated / n, 4),
        "category_precision": round(supported / max(1, mentioned), 4),
        "category_mentions": mentioned,
        "fallback_rate": round(fallbacks / n, 4),
        "mean_cos_k": round(float(np.mean(cosines)), 4) if cosines else None,
    }


def run(
    configs: list[str], n_users: int, n_items: int, seed: int, work: Path, k: int
) -> list[dict[str, Any]]:
    from offline_jobs.context import load_context
    from offline_jobs.jobs.builder import BuildOptions, build_profiles
    from offline_jobs.settings import JobSettings

    ctx = load_context("movielens-100k")
    users, items = sample(ctx, n_users, n_items, seed)
    cache = work / "shared_cache.sqlite"
    walls: dict[str, float] = {}
    rows = []
    for name in configs:
        spec = CONFIGS[name]
        out = work / name
        settings = JobSettings(grounding=spec["grounding"], profile_candidates=spec["candidates"])
        prompt_file = resources.files("offline_jobs.profiles.prompts").joinpath(f"{spec['prompts']}.toml")
        options = BuildOptions(
            "proex", k, f"bench-{name}", cache_path=cache, prompt_file=str(prompt_file), show_progress=False
        )
        started = time.perf_counter()
        report = build_profiles(ctx, users, items, out, options, settings)
        wall = time.perf_counter() - started
        walls[name] = wall
        total = wall + (walls.get(spec["cost_of"], 0.0) if spec["cost_of"] else 0.0)
        figures = measure(out, ctx)
        stats = report["stats"]
        row = {
            "config": name,
            "grounding": spec["grounding"],
            "prompts": spec["prompts"],
            "candidates": spec["candidates"],
            **figures,
            "generated": stats.get("generated"),
            "cache_hits": stats.get("cache_hits"),
            "wall_s": round(wall, 1),
            "wall_s_total": round(total, 1),
            "profiles_per_s": round(figures["profiles"] / max(total, 1e-9), 3),
            "loadavg_1m": round(os.getloadavg()[0], 2),
        }
        rows.append(row)
        print_table([row], f"profile_quality: {name}")
        record(
            "profile_quality",
            {"table": [row]},
            {
                "dataset": "movielens-100k",
                "strategy": "proex",
                "k": k,
                "users": len(users),
                "items": len(items),
                "sample": f"demo 24+24 + seeded {n_users}+{n_items} (seed {seed})",
                "backend": settings.llm_backend,
                "config": name,
                "note": "machine shared with other jobs; loadavg recorded per row",
            },
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks profile_quality", description=__doc__)
    parser.add_argument("--configs", default="off,on,small", help=f"comma list of {', '.join(CONFIGS)}")
    parser.add_argument("--users", type=int, default=16, help="seeded users beyond the demo's 24")
    parser.add_argument("--items", type=int, default=16, help="seeded items beyond the demo's 24")
    parser.add_argument("--seed", type=int, default=2024, help="random seed of the sampled users and items")
    parser.add_argument("--k", type=int, default=4, help="profiles per entity (ProEx K)")
    parser.add_argument("--work", default=None, help="folder for the stores and the shared cache (kept)")
    parser.add_argument(
        "--grade",
        default=None,
        help="measure an existing MovieLens-100k profile store (e.g. the demo's LLM sample) instead of "
        "generating: its LLM rows as they were kept, without the check",
    )
    args = parser.parse_args(argv)
    if args.grade:
        from offline_jobs.context import load_context

        row = {
            "config": "graded",
            "store": args.grade,
            **measure(Path(args.grade), load_context("movielens-100k")),
        }
        print_table([row], "profile_quality (graded store)")
        record("profile_quality", {"table": [row]}, {"dataset": "movielens-100k", "mode": "grade"})
        return
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown configs {unknown}; known: {', '.join(CONFIGS)}")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="profile-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = run(configs, args.users, args.items, args.seed, work, args.k)
    print_table(rows, "profile_quality")


if __name__ == "__main__":
    main()
