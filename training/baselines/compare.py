"""The baselines beside a trained model: fitted on the same split, tuned on validation Recall@20,
evaluated on validation and test with the same protocol (:func:`training.evaluation.evaluate`).

:func:`fit_baselines` returns, per baseline, its chosen hyperparameter, the validation Recall@20 of
every grid value, the validation and test metrics and the seconds it took (or why it was skipped:
EASE above its item limit). Results are cached per split fingerprint in the process, so a benchmark
that trains several models on one split fits the baselines once. :func:`comparison_lines` prints them
beside a model: ``valid R@20: Mult-VAE+ProEx 0.2900 | EASE 0.2910 | item-kNN 0.2600 | MostPop 0.1500``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from training.baselines.ease import DEFAULT_LAMBDAS, DEFAULT_MAX_ITEMS, EASE, EASETooLargeError, gram_matrix
from training.baselines.itemknn import DEFAULT_NEIGHBOURS, ItemKNN
from training.baselines.mostpop import MostPop
from training.data.split import Split
from training.evaluation import evaluate

log = logging.getLogger(__name__)

BASELINES = ("ease", "itemknn", "mostpop")
LABELS = {"ease": "EASE", "itemknn": "item-kNN", "mostpop": "MostPop"}
SELECT_METRIC = "recall@20"
MODEL_LABELS = {"lightgcn": "LightGCN", "multvae": "Mult-VAE"}


@dataclass(frozen=True)
class BaselineOptions:
    """Which baselines to fit and the grids their hyperparameter is chosen from."""

    names: tuple[str, ...] = BASELINES
    ease_lambdas: tuple[float, ...] = DEFAULT_LAMBDAS
    ease_max_items: int = DEFAULT_MAX_ITEMS
    ease_extend: int = 3  # lambdas tried past an edge of the grid when the best sits on it
    knn_neighbours: tuple[int, ...] = DEFAULT_NEIGHBOURS

    def __post_init__(self) -> None:
        unknown = set(self.names) - set(BASELINES)
        if unknown:
            raise ValueError(f"unknown baselines {sorted(unknown)}: use {', '.join(BASELINES)}")
        if not self.ease_lambdas or not self.knn_neighbours:
            raise ValueError("the EASE and item-kNN grids need at least one value")


_CACHE: dict[tuple[str, BaselineOptions], dict[str, dict[str, Any]]] = {}


def fit_baselines(split: Split, options: BaselineOptions | None = None) -> dict[str, dict[str, Any]]:
    """Fit, tune (validation Recall@20) and evaluate the baselines of ``options`` on ``split``."""
    options = options or BaselineOptions()
    key = (split.fingerprint(), options)
    if key not in _CACHE:
        _CACHE[key] = {name: _fit_one(name, split, options) for name in options.names}
    return {name: dict(result) for name, result in _CACHE[key].items()}


def _fit_one(name: str, split: Split, options: BaselineOptions) -> dict[str, Any]:
    started = time.perf_counter()
    grid: dict[str, float] = {}
    if name == "mostpop":
        best: Any = MostPop().fit(split.train)
    elif name == "ease":
        probe = EASE(max_items=options.ease_max_items)
        try:
            probe.check_size(split.n_items)
        except EASETooLargeError as exc:
            log.warning("%s", exc)
            return {"label": LABELS[name], "skipped": str(exc)}
        gram = gram_matrix(split.train)
        best, best_score = None, -1.0
        tried: list[float] = []
        pending = sorted(options.ease_lambdas)
        while pending:
            l2 = pending.pop(0)
            model = EASE(l2, options.ease_max_items).fit(split.train, gram)
            score = evaluate(model.score, split, "valid")[SELECT_METRIC]
            grid[f"{l2:g}"] = score
            tried.append(l2)
            if score > best_score:
                best, best_score = model, score
            else:
                model.weights = None  # free the I x I matrix before the next solve
            if not pending:  # the best sits on an edge of what was tried: go one step past it
                pending = _past_the_edge(best.l2, tried, len(options.ease_lambdas), options.ease_extend)
        del gram
    else:
        neighbours = sorted(options.knn_neighbours)
        full = ItemKNN(neighbours[-1]).fit(split.train)
        best, best_score = None, -1.0
        for k in neighbours:
            knn = full.with_k(k)
            score = evaluate(knn.score, split, "valid")[SELECT_METRIC]
            grid[str(k)] = score
            if score > best_score:
                best, best_score = knn, score
    valid = evaluate(best.score, split, "valid")
    test = evaluate(best.score, split, "test")
    result = {
        "label": LABELS[name],
        "params": best.params(),
        "valid": valid.metrics,
        "test": test.metrics,
        "seconds": round(time.perf_counter() - started, 3),
    }
    if grid:
        result["grid_valid_recall@20"] = grid
    log.info(
        "%s %s: valid recall@20=%.4f test recall@20=%.4f",
        LABELS[name],
        best.params(),
        valid[SELECT_METRIC],
        test[SELECT_METRIC],
        extra={"baseline": name, **{f"param_{k}": v for k, v in best.params().items()}},
    )
    return result


def summarise(baselines: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The short form (for manifests and reports): params, validation and test Recall@20, or why the
    baseline was skipped."""
    return {
        name: {
            "params": result.get("params"),
            **{
                f"{part}_{SELECT_METRIC}": result[part][SELECT_METRIC]
                for part in ("valid", "test")
                if part in result
            },
            **({"skipped": result["skipped"]} if "skipped" in result else {}),
        }
        for name, result in baselines.items()
    }


def _past_the_edge(best: float, tried: list[float], grid_size: int, steps: int) -> list[float]:
    """The next lambda to try when ``best`` is the smallest or largest tried (halve or double it),
    at most ``steps`` past the ``grid_size`` values of the grid; else none."""
    if len(tried) < 2 or len(tried) - grid_size >= steps:
        return []
    if best == min(tried):
        return [best / 2.0]
    if best == max(tried):
        return [best * 2.0]
    return []


def model_label(kind: str, proex: bool) -> str:
    """``Mult-VAE+ProEx``, ``LightGCN``, ..."""
    return MODEL_LABELS.get(kind, kind) + ("+ProEx" if proex else "")


def comparison_lines(
    label: str,
    metrics: dict[str, Any],
    baselines: dict[str, dict[str, Any]],
    parts: Sequence[str] = ("valid", "test"),
    metric: str = SELECT_METRIC,
) -> list[str]:
    """One line per part: the model's figure then each baseline's (``skipped`` when it was)."""
    short = metric.replace("recall@", "R@").replace("ndcg@", "N@")
    lines = []
    for part in parts:
        cells = [f"{label} {metrics[part][metric]:.4f}"]
        for name, result in baselines.items():
            value = f"{result[part][metric]:.4f}" if part in result else "skipped"
            cells.append(f"{result.get('label', LABELS.get(name, name))} {value}")
        lines.append(f"{part} {short}: " + " | ".join(cells))
    return lines


def gap_to_ease(model_valid: float, baselines: dict[str, dict[str, Any]]) -> float | None:
    """EASE's validation Recall@20 minus the model's (positive: the model trails EASE); None when EASE
    was not fitted (skipped or not asked for)."""
    ease = baselines.get("ease") or {}
    if "valid" not in ease:
        return None
    return float(ease["valid"][SELECT_METRIC]) - model_valid
