"""Full retrain and gated rollout.

``retrain`` rebuilds everything from all data: the live dataset (base data plus every logged interaction
and catalogue item), split as the live bundle's split was (the base pairs keep their train/validation/
test parts, logged interactions are training data, so both models are judged on the same validation
pairs and neither has trained on them), trained with the live model's configuration and the live
profile store, exported to a new bundle. Then the gate: the candidate and the live bundle are both
scored through their exported artefacts (ONNX towers and item vectors) on that validation split; a
candidate whose Recall@20 is worse than the live one's by more than the tolerance is refused. The
candidate is also set against EASE fitted on the same training split (the run's ``baselines``): the
report gives both validation figures and the gap, and with ``max_gap_to_ease`` set
(``--max-gap-to-ease`` / ``PROFILEREC_MAX_GAP_TO_EASE``) a candidate trailing EASE by more than that is
refused too. A
promoted bundle becomes live atomically (bundle pointer, then Qdrant aliases); the running service
switches without a restart; ``rollback`` makes the previous bundle live again.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from offline_jobs.refresh.live_data import apply_logs
from rec_contract.bundle import BundleManifest, new_version, read_manifest, resolve_pointer
from rec_contract.event_log import read_events
from rec_contract.profile_store import read_profile_vectors
from training.data import InteractionDataset, PredefinedSplit, Split, load_dataset, split_dataset
from training.evaluation import evaluate

log = logging.getLogger(__name__)


class PromotionRefusedError(RuntimeError):
    """The candidate is worse than the live model by more than the tolerance."""


@dataclass
class RetrainOptions:
    bundles_root: Path
    work_dir: Path
    text_encoder_dir: Path
    feedback_log: Path
    catalog_log: Path
    tolerance: float = 0.005  # absolute Recall@20
    epochs: int = 300
    eval_every: int = 5
    patience: int = 10
    seed: int | None = None
    data_dir: Path | None = None
    profile_store: Path | None = None
    promote: bool = True
    max_gap_to_ease: float | None = None  # absolute validation Recall@20; None: report only


@dataclass
class GateResult:
    live_version: str
    candidate_version: str
    metric: str
    live: float
    candidate: float
    tolerance: float
    passed: bool
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class BaselineGateResult:
    """The model's validation Recall@20 against EASE's on the same split."""

    metric: str
    model: float
    ease: float | None
    gap: float | None  # EASE minus the model: positive when the model trails
    max_gap: float | None
    passed: bool
    note: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def baseline_gate(
    model_valid: float, baselines: dict[str, dict[str, Any]], max_gap: float | None
) -> BaselineGateResult:
    """Compare ``model_valid`` (validation Recall@20) with EASE's from ``baselines`` (a run's
    ``metrics.json`` ``baselines``); refuse when it trails by more than ``max_gap`` (None: never)."""
    from training.baselines.compare import SELECT_METRIC, gap_to_ease

    gap = gap_to_ease(model_valid, baselines)
    ease_result = baselines.get("ease") or {}
    ease = float(ease_result["valid"][SELECT_METRIC]) if "valid" in ease_result else None
    if gap is None:
        note = ease_result.get("skipped") or "EASE was not fitted for this run"
        passed = True
    else:
        passed = max_gap is None or gap <= max_gap
        note = (
            f"model {model_valid:.4f} vs EASE {ease:.4f}: "
            + (f"trails by {gap:.4f}" if gap > 0 else f"ahead by {-gap:.4f}")
            + ("" if max_gap is None else f" (allowed gap {max_gap})")
        )
    return BaselineGateResult(f"valid {SELECT_METRIC}", model_valid, ease, gap, max_gap, passed, note)


def live_dataset(manifest: BundleManifest, opts: RetrainOptions) -> InteractionDataset:
    """Base data + logs, with the live bundle's split frozen as a predefined split (logged pairs train)."""
    base = load_dataset(manifest.dataset.source or manifest.dataset.name, opts.data_dir)
    seed = int(manifest.training.get("split_seed", 2024))
    base_split = split_dataset(base, manifest.dataset.split_method, seed=seed)  # type: ignore[arg-type]
    if base_split.fingerprint() != manifest.dataset.split_fingerprint:
        raise RuntimeError("the base data no longer reproduces the live bundle's split")
    frozen = InteractionDataset(
        **{
            **base.__dict__,
            "predefined_split": PredefinedSplit(
                train=base_split.pairs("train"),
                valid=base_split.pairs("valid"),
                test=base_split.pairs("test"),
            ),
        }
    )
    feedback = read_events(opts.feedback_log)
    catalog = read_events(opts.catalog_log)
    live, counts = apply_logs(frozen, feedback.events, catalog.events)
    live.report = {**live.report, "live_counts": counts}
    return live


def _profiles_for(
    store: Path | None, entity_type: str, ids: list[str], k: int, dim: int
) -> tuple[np.ndarray, np.ndarray]:
    if store is None or not (store / "profile_vectors.parquet").exists():
        return np.zeros((len(ids), 1, dim), np.float32), np.zeros((len(ids), 1), np.float32)
    pv = read_profile_vectors(store, entity_type, ids, k=k)
    return pv.vectors, pv.mask.astype(np.float32)


def evaluate_bundle(
    bundle_dir: Path, dataset: InteractionDataset, split: Split, part: str = "valid"
) -> dict[str, float]:
    """Score ``split`` through a bundle's exported artefacts (no torch): user tower + item vectors.

    Users and items the bundle does not know get no score (users skipped, items ranked last)."""
    from service.bundle_runtime import load_bundle

    bundle = load_bundle(bundle_dir)
    store = Path(bundle.manifest.profiles.store_path) if bundle.manifest.profiles.store_path else None
    k, dim = max(1, bundle.manifest.profiles.k), bundle.manifest.profiles.text_dim
    users_known = np.array([bundle.user_index.get(str(u), -1) for u in dataset.user_ids])
    items_known = np.array([bundle.item_index.get(str(i), -1) for i in dataset.item_ids])
    item_matrix = np.zeros((dataset.n_items, bundle.item_vectors.shape[1]), np.float32)
    item_matrix[items_known >= 0] = bundle.item_vectors[items_known[items_known >= 0]]
    unknown_items = items_known < 0
    user_profiles, user_mask = _profiles_for(store, "user", [str(u) for u in dataset.user_ids], k, dim)
    train = split.train.tocsr()

    def score(users: np.ndarray) -> np.ndarray:
        prof, mask = user_profiles[users], user_mask[users]
        if bundle.kind == "lightgcn":
            assert bundle.collab_users is not None
            rows = users_known[users]
            collab = np.where((rows >= 0)[:, None], bundle.collab_users[np.maximum(rows, 0)], 0.0).astype(
                np.float32
            )
            vectors = bundle.user_tower(collab=collab, profiles=prof, profile_mask=mask)
        else:
            history = np.zeros((len(users), bundle.n_items), np.float32)
            coo = train[users].tocoo()
            cols = items_known[coo.col]
            keep = cols >= 0
            history[coo.row[keep], cols[keep]] = 1.0
            vectors = bundle.user_tower(history=history, profiles=prof, profile_mask=mask)
        scores = vectors @ item_matrix.T
        scores[:, unknown_items] = -np.inf
        return scores

    result = evaluate(score, split, part, users=np.flatnonzero(users_known >= 0), batch_size=512)
    return {**result.metrics, "users": float(result.n_users)}


def gate(
    live_dir: Path, candidate_dir: Path, dataset: InteractionDataset, split: Split, tolerance: float
) -> GateResult:
    live_metrics = evaluate_bundle(live_dir, dataset, split, "valid")
    candidate_metrics = evaluate_bundle(candidate_dir, dataset, split, "valid")
    metric = "recall@20"
    passed = candidate_metrics[metric] >= live_metrics[metric] - tolerance
    return GateResult(
        live_version=live_dir.name,
        candidate_version=candidate_dir.name,
        metric=metric,
        live=live_metrics[metric],
        candidate=candidate_metrics[metric],
        tolerance=tolerance,
        passed=passed,
        details={"live": live_metrics, "candidate": candidate_metrics},
    )


def retrain(opts: RetrainOptions, qdrant_client: Any = None) -> dict[str, Any]:
    """Retrain on all data, export, gate against the live bundle, promote (or refuse)."""
    from offline_jobs.publish.promote import publish
    from training.export import ExportOptions, export_bundle
    from training.models import TrainConfig
    from training.proex import ProExConfig
    from training.runs import RunSpec, execute_run

    live_dir = resolve_pointer(opts.bundles_root)
    manifest = read_manifest(live_dir)
    dataset = live_dataset(manifest, opts)
    version = new_version(
        f"{manifest.dataset.name}-{manifest.model_kind}{'-proex' if manifest.proex else ''}"
    )
    data_dir = opts.work_dir / "datasets" / f"live-{version}"
    dataset.save(data_dir)
    store = opts.profile_store or (
        Path(manifest.profiles.store_path) if manifest.profiles.store_path else None
    )
    proex = ProExConfig(**manifest.training["proex"]) if manifest.training.get("proex") else None
    spec = RunSpec(
        dataset=str(data_dir),
        model=manifest.model_kind,
        proex=proex,
        profiles_path=str(store) if proex is not None and store else None,
        hyperparameters=dict(manifest.training.get("hyperparameters", {})),
        train=TrainConfig(
            epochs=opts.epochs,
            eval_every=opts.eval_every,
            patience=opts.patience,
            seed=opts.seed if opts.seed is not None else int(manifest.training.get("seed", 2024)),
            progress=False,
        ),
        split_method="predefined",
        out=str(opts.work_dir / "runs" / f"retrain-{version}"),
    )
    outcome = execute_run(spec)
    candidate = export_bundle(
        outcome.run_dir,
        ExportOptions(
            bundles_root=opts.bundles_root, text_encoder_dir=opts.text_encoder_dir, version=version
        ),
    )
    split = split_dataset(dataset, "predefined")
    result = gate(live_dir, candidate, dataset, split, opts.tolerance)
    versus_ease = baseline_gate(
        result.candidate, outcome.metrics.get("baselines") or {}, opts.max_gap_to_ease
    )
    log.info("candidate against EASE: %s", versus_ease.note, extra={"vs_ease": versus_ease.as_dict()})
    report: dict[str, Any] = {
        "candidate": candidate.name,
        "live": live_dir.name,
        "gate": result.__dict__,
        "vs_ease": versus_ease.as_dict(),
        "data": dataset.report.get("live_counts", {}),
        "run_dir": str(outcome.run_dir),
    }
    (opts.work_dir / "rollouts").mkdir(parents=True, exist_ok=True)
    (opts.work_dir / "rollouts" / f"{version}.json").write_text(json.dumps(report, indent=2, default=str))
    if not result.passed:
        log.warning("candidate refused", extra={"gate": result.__dict__})
        raise PromotionRefusedError(
            f"candidate {candidate.name} Recall@20 {result.candidate:.4f} < live {result.live:.4f} "
            f"- tolerance {result.tolerance} on the validation split; not promoted "
            f"(report in {opts.work_dir / 'rollouts'})"
        )
    if not versus_ease.passed:
        log.warning("candidate refused: trails EASE", extra={"vs_ease": versus_ease.as_dict()})
        raise PromotionRefusedError(
            f"candidate {candidate.name} trails EASE on the validation split: {versus_ease.note}; "
            f"not promoted (report in {opts.work_dir / 'rollouts'})"
        )
    if opts.promote:
        report["publish"] = publish(candidate, qdrant_client, store)
    return report
