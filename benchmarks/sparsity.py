"""The sparsity curve: base vs ProEx-fused LightGCN and Mult-VAE trained on 10%, 25%, 50% and 100% of
each user's training interactions (issue 16, part 4).

Every (model, variant, fraction, seed) is one training run through :func:`training.runs.execute_run`
(``RunSpec.train_fraction``: a seeded subsample of each user's training interactions, at least one
each, the subsample's seed = the training seed; validation and test unchanged), with the
``train_quality`` protocol (early stopping on validation Recall@20, full-ranking test metrics of the
best checkpoint) and its run folders: ``<runs-dir>/movielens-100k-<model>-<variant>-f<percent>-seed<seed>``.
A finished run folder whose ``config.json`` matches is reused, so the part is resumable; with
``train=False`` only finished runs are read and the table says which cells lack seeds.

The profile store is given (``--profiles``): it is built from the whole training split, so at a low
fraction the profiles still describe the interactions the model does not see (profiles as a side
source richer than the interaction log, the setting the papers motivate). EASE, item-kNN and MostPop
are fitted on each base run's (subsampled) split: the strongest non-profile row per fraction is the
best of them and the two base models.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.train_quality import run_one

FRACTIONS = (0.1, 0.25, 0.5, 1.0)
MODELS = ("lightgcn", "multvae")
HYPERPARAMETERS: dict[str, dict[str, Any]] = {"lightgcn": {"lr": 0.005}}  # as the train_quality records
DATASET = "movielens-100k"


@dataclass(frozen=True)
class Cell:
    model: str
    variant: str  # base | proex
    fraction: float
    seed: int

    def folder(self, runs_dir: Path) -> Path:
        return (
            runs_dir
            / f"{DATASET}-{self.model}-{self.variant}-f{round(100 * self.fraction):03d}-seed{self.seed}"
        )


def cells(
    seeds: Sequence[int], fractions: Sequence[float] = FRACTIONS, models: Sequence[str] = MODELS
) -> list[Cell]:
    """Every run of the curve, seed by seed (a finished seed is a complete table before the next)."""
    return [
        Cell(model, variant, fraction, seed)
        for seed in seeds
        for fraction in fractions
        for model in models
        for variant in ("base", "proex")
    ]


def spec_of(cell: Cell, runs_dir: Path, profiles: str, train: Any, data_dir: str | None = None) -> Any:
    """The :class:`training.runs.RunSpec` of one cell (``train``: a ``TrainConfig`` without the seed)."""
    from dataclasses import replace

    from training.baselines.compare import BaselineOptions
    from training.proex import proex_defaults
    from training.runs import RunSpec

    return RunSpec(
        dataset=DATASET,
        model=cell.model,
        proex=proex_defaults(cell.model) if cell.variant == "proex" else None,
        profiles_path=profiles if cell.variant == "proex" else None,
        hyperparameters=HYPERPARAMETERS.get(cell.model, {}),
        train=replace(train, seed=cell.seed),
        out=str(cell.folder(runs_dir)),
        data_dir=data_dir,
        # the baselines depend only on the split, which the base and ProEx runs of a cell share
        baselines=BaselineOptions() if cell.variant == "base" else None,
        train_fraction=cell.fraction,
        subsample_seed=cell.seed,
    )


def finished(spec: Any) -> dict[str, Any] | None:
    """The figures of a finished run folder matching ``spec``, else None (nothing is trained)."""
    from benchmarks.train_quality import _comparable, _expected_config
    from training.runs import CONFIG_FILE, METRICS_FILE

    run_dir = spec.run_dir()
    if not (run_dir / METRICS_FILE).exists() or not (run_dir / CONFIG_FILE).exists():
        return None
    old = json.loads((run_dir / CONFIG_FILE).read_text())
    wanted = _expected_config(spec)
    if wanted is None or _comparable(old) != _comparable(wanted):
        return None
    return {"metrics": json.loads((run_dir / METRICS_FILE).read_text()), "run_dir": str(run_dir)}


def collect(
    all_cells: Sequence[Cell], specs: dict[Cell, Any], train: bool, log: Any = print
) -> dict[Cell, dict[str, Any]]:
    """Figures of every cell: reused when finished, trained when ``train``, else left out."""
    results: dict[Cell, dict[str, Any]] = {}
    for cell in all_cells:
        found = finished(specs[cell])
        if found is None and train:
            found = run_one(specs[cell], reuse=True)
        if found is None:
            continue
        results[cell] = found
        test = found["metrics"]["test"]
        log(
            f"{cell.model} {cell.variant} {cell.fraction:.0%} seed {cell.seed}: R@20 {test['recall@20']:.4f} "
            f"N@20 {test['ndcg@20']:.4f} best epoch {found['metrics']['best_epoch']}"
        )
    return results


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def helps(gains: Sequence[float]) -> bool:
    """ProEx helps in a cell when its mean R@20 gain over the base is positive and at least half of
    the seeds (paired: same subsample, same seed) gain."""
    return bool(gains) and _mean(gains) > 0 and 2 * sum(g > 0 for g in gains) >= len(gains)


def table(
    results: dict[Cell, dict[str, Any]],
    seeds: Sequence[int],
    fractions: Sequence[float] = FRACTIONS,
    models: Sequence[str] = MODELS,
) -> tuple[list[dict[str, Any]], dict[str, str], list[str]]:
    """Rows (per model and fraction: base and ProEx R/N@20, the relative gain, the strongest
    non-profile row), the fraction at which ProEx stops helping per model, and what is missing."""
    rows: list[dict[str, Any]] = []
    missing = [
        f"{model} {variant} {fraction:.0%} seed {seed}"
        for seed in seeds
        for fraction in fractions
        for model in models
        for variant in ("base", "proex")
        if Cell(model, variant, fraction, seed) not in results
    ]
    helped: dict[str, dict[float, bool]] = {model: {} for model in models}
    for fraction in fractions:
        # the strongest non-profile row at this fraction: the base models and the baselines of
        # each base run's split (mean over the seeds that have it)
        # (every model's runs of a seed share one split: the baselines are taken once per seed)
        others: dict[str, list[float]] = {}
        fitted: set[int] = set()
        for model in models:
            for seed in seeds:
                found = results.get(Cell(model, "base", fraction, seed))
                if found is None:
                    continue
                others.setdefault(f"{model} base", []).append(found["metrics"]["test"]["recall@20"])
                baselines = found["metrics"].get("baselines") or {}
                if seed in fitted or not baselines:
                    continue
                fitted.add(seed)
                for result in baselines.values():
                    if "test" in result:
                        others.setdefault(str(result["label"]), []).append(result["test"]["recall@20"])
        strongest = max(others.items(), key=lambda kv: _mean(kv[1]), default=None)
        for model in models:
            pairs = [
                (results[Cell(model, "base", fraction, s)], results[Cell(model, "proex", fraction, s)])
                for s in seeds
                if Cell(model, "base", fraction, s) in results
                and Cell(model, "proex", fraction, s) in results
            ]
            if not pairs:
                continue
            base = [b["metrics"]["test"] for b, _ in pairs]
            fused = [p["metrics"]["test"] for _, p in pairs]
            gains = [
                100 * (p["recall@20"] - b["recall@20"]) / b["recall@20"]
                for b, p in zip(base, fused, strict=True)
            ]
            helped[model][fraction] = helps(gains)
            b20, p20 = _mean([t["recall@20"] for t in base]), _mean([t["recall@20"] for t in fused])
            bn, pn = _mean([t["ndcg@20"] for t in base]), _mean([t["ndcg@20"] for t in fused])
            top = _mean(strongest[1]) if strongest else float("nan")
            rows.append(
                {
                    "model": model,
                    "fraction": f"{fraction:.0%}",
                    "seeds": len(pairs),
                    "base_R@20": round(b20, 4),
                    "proex_R@20": round(p20, 4),
                    "gain_R@20_%": round(100 * (p20 - b20) / b20, 2),
                    "base_N@20": round(bn, 4),
                    "proex_N@20": round(pn, 4),
                    "gain_N@20_%": round(100 * (pn - bn) / bn, 2),
                    "seeds_gaining": f"{sum(g > 0 for g in gains)}/{len(gains)}",
                    "gain_R@20_per_seed_%": " ".join(f"{g:+.2f}" for g in gains),
                    "strongest_non_profile": strongest[0] if strongest else "",
                    "strongest_R@20": round(top, 4),
                    "proex_vs_strongest_%": round(100 * (p20 - top) / top, 2) if strongest else float("nan"),
                }
            )
    verdicts = {model: stops_helping(helped[model], fractions) for model in models}
    return rows, verdicts, missing


def stops_helping(helped: dict[float, bool], fractions: Sequence[float]) -> str:
    """A sentence: from which data fraction on ProEx no longer helps (see :func:`helps`)."""
    measured = [f for f in sorted(fractions) if f in helped]
    if not measured:
        return "not measured"
    tail = None  # the smallest fraction from which on ProEx never helps
    for f in reversed(measured):
        if helped[f]:
            break
        tail = f
    helping = [f"{f:.0%}" for f in measured if helped[f]]
    if tail is None:
        if len(helping) == len(measured):
            return f"helps at every measured fraction ({', '.join(helping)})"
        not_helping = [f"{f:.0%}" for f in measured if not helped[f]]
        return f"helps at {', '.join(helping)}, not at {', '.join(not_helping)} (no single turning point)"
    if tail == measured[0]:
        return f"helps at no measured fraction (from {tail:.0%} on)"
    return f"stops helping at {tail:.0%} (helps at {', '.join(helping)})"
