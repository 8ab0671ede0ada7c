"""Profile quality of the LLM profile jobs: how faithful the kept profiles are to the data.

On a fixed sample of MovieLens-100k (the demo's entities, the first 24 users and 24 items, plus a
seeded sample of further users and items), runs the real generation job (embedded SmolLM2-135M by
default) once per configuration and reports, per configuration:

* ``hallucinated_rate``: share of the kept profiles that name at least one title not grounded in the
  entity's data (:mod:`offline_jobs.profiles.grounding`; an extractive fallback counts as grounded: it is
  computed from the data);
* ``category_precision``: supported / mentioned genres, over the kept LLM profiles (an extractive
  fallback is grounded by construction, as for titles: its genre mentions include negative and
  per-genre rating statements, "rarely chooses Horror", "Horror (2.2) lowest", and the tags of
  co-watched titles, which a claim detector reads as unsupported); ``category_precision_all`` counts
  the fallbacks' mentions too;
* ``fallback_rate``: share of the kept profiles that are extractive fallbacks;
* ``repaired_rate``: share of the kept profiles that are LLM profiles cut to their grounded sentences
  (``PROFILEREC_GROUNDING_REPAIR``);
* ``mean_cos_k``: mean pairwise cosine of an entity's K profile vectors (ProEx wants them diverse);
* ``profiles_per_s``: profiles / wall seconds of the job. Every configuration shares one generation
  cache; a configuration with the check on asks the same first requests as the one without it, so its
  cost is the check-off run's seconds plus its own (``wall_s_total``), and its profiles/s is taken
  over that total.

* ``hallucinated_before``: share of the profile slots whose *first* generation (attempt 0, candidate 0
  when N = 1) named a title not grounded in the data, read from the rejection record the check keeps
  (``quality["rejected"][0]``): the rate the check removed, on the same run;
* ``first_pass``: share of the profile slots whose first attempt passed validation and the check.

Configurations (``--configs``): ``off`` (the check off, ProEx prompts proex.toml: "before"), ``on``
(the check on, best of 1), ``small`` (the check on, the small-model prompts proex-small.toml),
``small_best2`` (plus best of 2 candidates), ``n2`` and ``n3`` (proex.toml, best of 2 and of 3: with
``on`` the measurement behind the default of ``PROFILEREC_PROFILE_CANDIDATES``), ``default`` (what a
job does with the default settings), ``norepair`` (the check on without the sentence-level repair of
``PROFILEREC_GROUNDING_REPAIR``; every other configuration with the check on repairs, as the default).
A configuration's ``cache`` is ``own`` (a cache of its own: its
profiles/s is its own cost) or the configuration whose cache it shares (its first requests are
answered from there, so its cost is that configuration's seconds plus its own, ``wall_s_total``).

``--shards S`` runs the sample in S parts (each a store of its own under ``<work>/<config>/shard-i``
with a ``report.json``): a rerun skips the finished parts and resumes the unfinished one from the
generation cache, and ``--measure-only`` records the figures of the finished parts.

``--utility`` adds the ProEx paper's "leave one in" utility of each profile slot (Fig. 4b,
:mod:`benchmarks.profile_utility`): a Mult-VAE fused with that slot alone, trained for at most
``--utility-epochs`` epochs, scored on validation Recall@20, next to the base model and the all-K
fusion. Run it alone: ``flock /tmp/profilerec-heavy.lock python -m benchmarks profile_quality``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.results import print_table, record

CONFIGS: dict[str, dict[str, Any]] = {
    "off": {"grounding": False, "prompts": "proex", "candidates": 1, "cost_of": None},
    "on": {"grounding": True, "prompts": "proex", "candidates": 1, "cost_of": None},
    "n2": {"grounding": True, "prompts": "proex", "candidates": 2, "cost_of": "on"},
    "n3": {"grounding": True, "prompts": "proex", "candidates": 3, "cost_of": "n2"},
    "small": {"grounding": True, "prompts": "proex-small", "candidates": 1, "cost_of": None},
    "small_best2": {"grounding": True, "prompts": "proex-small", "candidates": 2, "cost_of": "small"},
    "default": {"grounding": True, "prompts": "proex", "candidates": None, "cost_of": None},
    "norepair": {"grounding": True, "prompts": "proex", "candidates": 1, "cost_of": None, "repair": False},
}
HALLUCINATION_REASONS = frozenset({"invented_title", "ungrounded_title"})


def sample(ctx: Any, n_users: int, n_items: int, seed: int) -> tuple[list[int], list[int]]:
    """The demo's first 24 users and items, plus a seeded sample of the others."""
    rng = np.random.default_rng(seed)
    ds = ctx.dataset
    demo_u, demo_i = list(range(min(24, ds.n_users))), list(range(min(24, ds.n_items)))
    rest_u = rng.permutation(np.arange(24, ds.n_users))[:n_users]
    rest_i = rng.permutation(np.arange(24, ds.n_items))[:n_items]
    return demo_u + sorted(int(u) for u in rest_u), demo_i + sorted(int(i) for i in rest_i)


def _first_attempt(quality: dict[str, Any]) -> tuple[bool, bool]:
    """(passed, hallucinated) of a profile slot's first attempt, from its quality record.

    A first attempt kept after the repair cut its wrong sentences passed; its faults before the cut
    (``quality["repaired"]``) say whether it named an ungrounded title."""
    rejected = quality.get("rejected") or []
    if not rejected:
        return True, bool(HALLUCINATION_REASONS & set(quality.get("repaired") or []))
    return False, bool(HALLUCINATION_REASONS & set(rejected[0]))


def _listed(quality: dict[str, Any], index: dict[str, int]) -> list[int]:
    """The neighbours an item's prompt listed (their titles are grounded for that item, as in the job).

    Stores from before the record kept ``listed`` give the items the job's check matched instead
    (``grounded_on``; nothing with the check off): the check grounded them, so they were allowed."""
    ids = quality.get("listed") or (quality.get("grounding") or {}).get("grounded_on") or []
    return [index[i] for i in ids if i in index]


def measure(folders: Sequence[Path], ctx: Any) -> dict[str, Any]:
    """The quality figures of generated profile stores (the parts of one sample)."""
    from offline_jobs.profiles.grounding import Grounder
    from rec_contract.profile_store import read_profiles, read_store_vectors

    grounder = Grounder(ctx)
    u_index, i_index = ctx.dataset.user_index(), ctx.dataset.item_index()
    rows = [row for folder in folders for row in read_profiles(folder)]
    hallucinated = supported = mentioned = fallbacks = 0
    before = first_pass = checked = supported_all = mentioned_all = repaired = 0
    for row in rows:
        quality = json.loads(row["quality"]) if isinstance(row["quality"], str) else row["quality"] or {}
        if "attempts" in quality:
            passed, invented = _first_attempt(quality)
            checked += 1
            first_pass += passed
            before += invented
        is_item = row["entity_type"] == "item"
        index = (i_index if is_item else u_index)[row["entity_id"]]
        if is_item:
            ref = grounder.item_reference(index, _listed(quality, i_index))
        else:
            ref = grounder.user_reference(index)
        verdict = grounder.check(str(row["text"]), ref)
        mentioned_all += len(verdict.categories)
        supported_all += sum(verdict.categories.values())
        if row["is_fallback"]:
            fallbacks += 1
            continue
        repaired += bool(quality.get("repaired"))
        if verdict.ungrounded:
            hallucinated += 1
        mentioned += len(verdict.categories)
        supported += sum(verdict.categories.values())
    cosines = []
    for folder in folders:
        for _, _, vectors in read_store_vectors(folder)[0]:
            if len(vectors) > 1:
                sims = vectors @ vectors.T
                upper = sims[np.triu_indices(len(vectors), 1)]
                cosines.append(float(upper.mean()))
    n = max(1, len(rows))
    return {
        "profiles": len(rows),
        "hallucinated_rate": round(hallucinated / n, 4),
        "hallucinated_before": round(before / checked, 4) if checked else None,
        "first_pass": round(first_pass / checked, 4) if checked else None,
        "category_precision": round(supported / max(1, mentioned), 4),
        "category_mentions": mentioned,
        "category_precision_all": round(supported_all / max(1, mentioned_all), 4),
        "fallback_rate": round(fallbacks / n, 4),
        "repaired_rate": round(repaired / n, 4),
        "mean_cos_k": round(float(np.mean(cosines)), 4) if cosines else None,
    }


def shards(values: list[int], n: int) -> list[list[int]]:
    """``values`` in ``n`` contiguous parts (sizes differ by at most one)."""
    return [part.tolist() for part in np.array_split(np.asarray(values, dtype=np.int64), n)]


def _cache_root(name: str) -> str:
    while CONFIGS[name]["cost_of"]:
        name = CONFIGS[name]["cost_of"]
    return name


def generate(
    ctx: Any, name: str, users: list[int], items: list[int], work: Path, options: dict[str, Any]
) -> list[dict[str, Any]]:
    """Run (or resume) configuration ``name`` over the sample in parts; the reports of finished parts."""
    from offline_jobs.jobs.builder import BuildOptions, build_profiles
    from offline_jobs.settings import JobSettings

    spec = CONFIGS[name]
    extra: dict[str, Any] = {"profile_candidates": spec["candidates"]} if spec["candidates"] else {}
    if "repair" in spec:
        extra["grounding_repair"] = spec["repair"]
    settings = JobSettings(grounding=spec["grounding"], **extra)
    prompt_file = resources.files("offline_jobs.profiles.prompts").joinpath(f"{spec['prompts']}.toml")
    build = BuildOptions(
        options["strategy"],
        options["k"],
        f"bench-{name}",
        cache_path=work / f"cache-{_cache_root(name)}.sqlite",
        prompt_file=str(prompt_file) if options["strategy"] == "proex" else None,
        show_progress=False,
    )
    reports = []
    n = options["shards"]
    for part, (part_users, part_items) in enumerate(zip(shards(users, n), shards(items, n), strict=True)):
        out = work / name / f"shard-{part}"
        done = out / "report.json"
        if not done.exists():
            if options["measure_only"]:
                continue
            started = time.perf_counter()
            load = os.getloadavg()[0]
            report = build_profiles(ctx, part_users, part_items, out, build, settings)
            wall = time.perf_counter() - started
            stats = report["stats"]
            summary = {
                "shard": part,
                "users": len(part_users),
                "items": len(part_items),
                "wall_s": round(wall, 1),
                "generated": stats.get("generated"),
                "cache_hits": stats.get("cache_hits"),
                "profiles": stats.get("profiles"),
                "candidates": settings.profile_candidates,
                "loadavg_1m_start": round(load, 2),
                "loadavg_1m_end": round(os.getloadavg()[0], 2),
            }
            done.write_text(json.dumps(summary))
            print(json.dumps({"config": name, **summary}), flush=True)
        reports.append({**json.loads(done.read_text()), "folder": str(out)})
    return reports


def run(
    configs: list[str], users: list[int], items: list[int], work: Path, options: dict[str, Any]
) -> list[dict[str, Any]]:
    from offline_jobs.context import load_context

    ctx = load_context("movielens-100k")
    walls: dict[str, float] = {}
    rows = []
    for name in configs:
        spec = CONFIGS[name]
        reports = generate(ctx, name, users, items, work, options)
        if not reports:
            print(f"profile_quality: {name}: no finished part", flush=True)
            continue
        wall = sum(r["wall_s"] for r in reports)
        walls[name] = wall
        total, cost = wall, spec["cost_of"]
        while cost:
            total += walls.get(cost, 0.0)
            cost = CONFIGS[cost]["cost_of"]
        figures = measure([Path(r["folder"]) for r in reports], ctx)
        row = {
            "config": name,
            "grounding": spec["grounding"],
            "prompts": spec["prompts"] if options["strategy"] == "proex" else options["strategy"],
            "candidates": reports[0].get("candidates", spec["candidates"]),
            "users": sum(r["users"] for r in reports),
            "items": sum(r["items"] for r in reports),
            **figures,
            "generated": sum(r["generated"] or 0 for r in reports),
            "cache_hits": sum(r["cache_hits"] or 0 for r in reports),
            "wall_s": round(wall, 1),
            "wall_s_total": round(total, 1),
            "profiles_per_s": round(figures["profiles"] / max(total, 1e-9), 3),
            "loadavg_1m": [r["loadavg_1m_end"] for r in reports],
        }
        if options["utility"]:
            row["utility"] = utility([Path(r["folder"]) for r in reports], work / name, options)
        rows.append(row)
        print_table([{k: v for k, v in row.items() if k != "utility"}], f"profile_quality: {name}")
        if options["utility"]:
            print_table(row["utility"], f"profile_quality: {name}: leave one in")
        parts = len(reports)
        record(
            "profile_quality",
            {"table": [row]},
            {
                "dataset": "movielens-100k",
                "strategy": options["strategy"],
                "k": options["k"],
                "users": row["users"],
                "items": row["items"],
                "sample": options["sample"],
                "parts": f"{parts} of {options['shards']}",
                "backend": "torch (embedded SmolLM2-135M)",
                "config": name,
                "cache": "own" if not spec["cost_of"] else f"shared with {_cache_root(name)}",
                "utility_epochs": options["utility_epochs"] if options["utility"] else None,
                "note": "machine shared with other jobs (2 cores); loadavg recorded per part",
            },
        )
    return rows


def utility(folders: list[Path], work: Path, options: dict[str, Any]) -> list[dict[str, Any]]:
    """The leave-one-in rows of the (merged) stores of one configuration."""
    import shutil

    from benchmarks.profile_utility import UtilityOptions, leave_one_in
    from rec_contract.profile_store import merge_into_store

    store = folders[0]
    if len(folders) > 1:
        store = work / "merged"
        shutil.rmtree(store, ignore_errors=True)
        shutil.copytree(folders[0], store)
        for folder in folders[1:]:
            merge_into_store(store, folder)
    return leave_one_in(
        store, options["k"], "movielens-100k", UtilityOptions(epochs=options["utility_epochs"])
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks profile_quality", description=__doc__)
    parser.add_argument("--configs", default="off,on,small", help=f"comma list of {', '.join(CONFIGS)}")
    parser.add_argument("--strategy", default="proex", help="proex, reclm or duet (prompts: proex's only)")
    parser.add_argument("--users", type=int, default=16, help="seeded users beyond the demo's 24")
    parser.add_argument("--items", type=int, default=16, help="seeded items beyond the demo's 24")
    parser.add_argument(
        "--skip-demo", action="store_true", help="leave the demo's 24 users and 24 items out of the sample"
    )
    parser.add_argument("--seed", type=int, default=2024, help="random seed of the sampled users and items")
    parser.add_argument("--k", type=int, default=4, help="profiles per entity (ProEx K)")
    parser.add_argument("--shards", type=int, default=1, help="run the sample in this many resumable parts")
    parser.add_argument(
        "--measure-only", action="store_true", help="generate nothing: record the finished parts only"
    )
    parser.add_argument("--utility", action="store_true", help="add the leave-one-in utility per slot")
    parser.add_argument("--utility-epochs", type=int, default=120, help="epoch bound of each utility model")
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
            **measure([Path(args.grade)], load_context("movielens-100k")),
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
    from offline_jobs.context import load_context

    users, items = sample(load_context("movielens-100k"), args.users, args.items, args.seed)
    if args.skip_demo:
        users, items = users[24:], items[24:]
    described = f"seeded {args.users}+{args.items} (seed {args.seed})"
    options = {
        "strategy": args.strategy,
        "k": args.k,
        "shards": max(1, args.shards),
        "measure_only": args.measure_only,
        "utility": args.utility,
        "utility_epochs": args.utility_epochs,
        "sample": described if args.skip_demo else f"demo 24+24 + {described}",
    }
    rows = run(configs, users, items, work, options)
    print_table([{k: v for k, v in r.items() if k != "utility"} for r in rows], "profile_quality")


if __name__ == "__main__":
    main()
