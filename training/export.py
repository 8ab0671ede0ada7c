"""Export a trained run to a versioned artefact bundle (``rec_contract.bundle``).

* the user tower and the item tower go to ONNX (opset 17) with dynamic batch and profile axes, and are
  checked against torch on random and real inputs (max absolute difference < ``PARITY_TOLERANCE``);
* the final item vectors (what Qdrant searches) come from the model's own item encoding, so the dot
  product with the user tower's output is the model's score;
* zero-shot items: for ProEx LightGCN the item tower *is* the model's (zero collaborative part + mean of
  the mapped text profile, RecLM's zero-shot setting); a model whose item side has no text path
  (Mult-VAE, whose items are decoder columns, and base LightGCN) gets a ridge regression from the
  item's mean profile embedding to its item vector, fitted on the catalogue at export time;
* the text encoder (ONNX + tokenizer, exported by ``profilerec-jobs export-text-encoder``) is copied in,
  so the service embeds cold-start text without torch.

The bundle is written into a temporary folder and renamed into place; the manifest checksums every file.
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnxruntime as ort
import scipy.sparse as sp
import torch
from torch import nn

from rec_contract.bundle import (
    BundleManifest,
    DatasetInfo,
    ProfileInfo,
    TowerSpec,
    new_version,
    seal_manifest,
    verify_bundle,
)
from rec_contract.content import CONTENT_FILE, item_text
from rec_contract.explanations import label_of_row
from rec_contract.naming import items_collection, profiles_collection
from rec_contract.profile_store import PROFILES_FILE, read_profiles
from training.baselines.compare import summarise as summarise_baselines
from training.data import InteractionDataset, Split, load_dataset
from training.models.base import Recommender
from training.profiles import ProfileInputs, load_profile_inputs
from training.runs import METRICS_FILE, SPLIT_DIR, load_run

log = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-4
OPSET = 17
TEXT_ENCODER_FILES = ("text_encoder.onnx", "tokenizer.json", "encoder.json")


class ExportError(RuntimeError):
    """The run cannot be exported (missing inputs, or ONNX does not reproduce torch)."""


@dataclass
class ExportOptions:
    bundles_root: Path
    text_encoder_dir: Path
    version: str | None = None
    seen: Literal["train", "all"] = "all"
    parity_users: int = 256
    ridge_alphas: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0)


@dataclass
class RunContext:
    """A trained run with everything the export needs around it."""

    run_dir: Path
    model: Recommender
    dataset_source: str
    dataset: InteractionDataset
    split: Split
    profiles: ProfileInputs | None
    profile_store: Path | None
    profile_version: str | None
    embedding_model: str | None
    profile_strategy: str | None
    metrics: dict[str, float]
    summary: dict[str, Any]


def load_run_context(run_dir: str | Path, data_dir: str | Path | None = None) -> RunContext:
    """Reload a run, its split, its dataset (checked against the run's fingerprint) and its profiles."""
    run_dir = Path(run_dir)
    model, config = load_run(run_dir)
    split = Split.load(run_dir / SPLIT_DIR)
    source = config.dataset_source or config.dataset
    dataset = load_dataset(source, data_dir)
    if dataset.fingerprint() != config.dataset_fingerprint:
        raise ExportError(
            f"{run_dir}: dataset {config.dataset!r} changed since training (fingerprint mismatch)"
        )
    profiles = None
    store = None
    info = config.profiles or {}
    if model.uses_profiles:
        store = Path(info["path"]) if info.get("path") else None
        if store is None or not store.exists():
            raise ExportError(f"{run_dir}: the run's profile store {store} is not available")
        profiles = load_profile_inputs(store, dataset, int(info["k"]))
        if info.get("fingerprint") and profiles.fingerprint() != info["fingerprint"]:
            raise ExportError(
                f"{run_dir}: profile store {store} changed since training (fingerprint mismatch)"
            )
    metrics_path = run_dir / METRICS_FILE
    raw_metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    metrics: dict[str, float] = {}
    for part in ("valid", "test"):
        for key, value in (raw_metrics.get(part) or {}).items():
            if isinstance(value, int | float):
                metrics[f"{part}_{key}"] = float(value)
    return RunContext(
        run_dir=run_dir,
        model=model,
        dataset_source=source,
        dataset=dataset,
        split=split,
        profiles=profiles,
        profile_store=store,
        profile_version=info.get("version"),
        embedding_model=info.get("embedding_model"),
        profile_strategy=info.get("strategy"),
        metrics=metrics,
        summary={
            "seed": config.seed,
            "split_seed": config.split_seed,
            "hyperparameters": config.hyperparameters,
            "proex": config.proex,
            "tuning": config.tuning,
            "baselines": summarise_baselines(raw_metrics.get("baselines") or {}),
        },
    )


class LinearColdItemTower(nn.Module):
    """``collab + W · masked_mean(profiles) + b`` (the bias only where a profile exists).

    Used as the zero-shot item tower of models whose item side has no text path."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray) -> None:
        super().__init__()
        self.weight: torch.Tensor
        self.bias: torch.Tensor
        self.register_buffer("weight", torch.from_numpy(np.ascontiguousarray(weight, dtype=np.float32)))
        self.register_buffer("bias", torch.from_numpy(np.ascontiguousarray(bias, dtype=np.float32)))

    def forward(
        self, collab: torch.Tensor, profiles: torch.Tensor, profile_mask: torch.Tensor
    ) -> torch.Tensor:
        weights = profile_mask.unsqueeze(-1)
        count = weights.sum(dim=1)
        pooled = (profiles * weights).sum(dim=1) / count.clamp(min=1.0)
        present = (count > 0).to(collab.dtype)
        return collab + pooled @ self.weight + present * self.bias


def fit_ridge(
    x: np.ndarray, y: np.ndarray, alphas: tuple[float, ...], seed: int = 0
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Ridge regression ``y ~ x W + b`` with the penalty chosen on a 10% held-out part."""
    if len(x) < 10:
        raise ExportError("too few items with profiles to fit the zero-shot item tower")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    cut = max(1, len(x) // 10)
    held, fit = order[:cut], order[cut:]

    def solve(rows: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
        xm, ym = x[rows].mean(axis=0), y[rows].mean(axis=0)
        xc, yc = x[rows] - xm, y[rows] - ym
        gram = xc.T @ xc + alpha * np.eye(x.shape[1])
        weight = np.linalg.solve(gram, xc.T @ yc)
        return weight, ym - xm @ weight

    scores = {}
    for alpha in alphas:
        weight, bias = solve(fit, alpha)
        pred = x[held] @ weight + bias
        ss_res = float(((y[held] - pred) ** 2).sum())
        ss_tot = float(((y[held] - y[held].mean(axis=0)) ** 2).sum())
        scores[alpha] = 1.0 - ss_res / max(ss_tot, 1e-12)
    best = max(scores, key=lambda a: scores[a])
    weight, bias = solve(np.arange(len(x)), best)
    return weight, bias, {"alpha": best, "heldout_r2": scores[best]}


def _export_onnx(
    module: nn.Module, inputs: dict[str, torch.Tensor], path: Path, dynamic: dict[str, dict[int, str]]
) -> None:
    module.eval()
    names = list(inputs)
    torch.onnx.export(
        module,
        tuple(inputs[n] for n in names),
        str(path),
        input_names=names,
        output_names=["vector"],
        dynamic_axes={**dynamic, "vector": {0: "B"}},
        opset_version=OPSET,
        dynamo=False,
    )


def _parity(module: nn.Module, path: Path, cases: list[dict[str, np.ndarray]]) -> float:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    worst = 0.0
    for case in cases:
        with torch.no_grad():
            expected = module(*(torch.from_numpy(case[n]) for n in case)).numpy()
        (got,) = session.run(["vector"], {n: v for n, v in case.items() if n in wanted})
        worst = max(worst, float(np.abs(np.asarray(got) - expected).max()))
    if worst >= PARITY_TOLERANCE:
        raise ExportError(
            f"{path.name}: ONNX differs from torch by {worst:.2e} (tolerance {PARITY_TOLERANCE})"
        )
    return worst


def _random_profile_case(
    rng: np.random.Generator, batch: int, k: int, dim: int
) -> tuple[np.ndarray, np.ndarray]:
    profiles = rng.standard_normal((batch, k, dim)).astype(np.float32)
    profiles /= np.linalg.norm(profiles, axis=-1, keepdims=True)
    mask = (rng.random((batch, k)) > 0.25).astype(np.float32)
    mask[0] = 0.0  # an entity without profiles
    return profiles, mask


def _csr_arrays(matrix: sp.csr_matrix) -> dict[str, Any]:
    matrix = sp.csr_matrix(matrix)
    matrix.sort_indices()
    return {"indptr": matrix.indptr.astype(np.int64), "indices": matrix.indices.astype(np.int32)}


def _item_snippets(store: Path | None, dataset: InteractionDataset) -> list[str]:
    """Slot-0 item profile text from the profile store, else the item's own text."""
    snippets = [dataset.item_text(i) for i in range(dataset.n_items)]
    if store is None or not (store / PROFILES_FILE).exists():
        return snippets
    index = dataset.item_index()
    for row in read_profiles(store):
        if row["entity_type"] == "item" and int(row["slot"]) == 0 and row["entity_id"] in index:
            snippets[index[row["entity_id"]]] = str(row["text"])
    return snippets


def _write_profiles(out: Path, ctx: RunContext, dataset: InteractionDataset) -> None:
    """The profile vectors the model was trained with, aligned with users.json / items.json, and their
    texts, each with its explanation label (``rec_contract.explanations``: source, grounding verdict,
    the items it is grounded on): the embedded service reads profiles from the bundle (a Qdrant server
    from its collection)."""
    assert ctx.profiles is not None
    np.save(out / "user_profiles.npy", ctx.profiles.user_vectors)
    np.save(out / "user_profile_mask.npy", ctx.profiles.user_mask)
    np.save(out / "item_profiles.npy", ctx.profiles.item_vectors)
    np.save(out / "item_profile_mask.npy", ctx.profiles.item_mask)
    texts: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    if ctx.profile_store is not None and (Path(ctx.profile_store) / PROFILES_FILE).exists():
        for row in read_profiles(Path(ctx.profile_store)):
            texts.setdefault((str(row["entity_type"]), str(row["entity_id"])), {})[int(row["slot"])] = row
    known = {"user": set(map(str, dataset.user_ids)), "item": set(map(str, dataset.item_ids))}
    with (out / "profile_texts.jsonl").open("w", encoding="utf-8") as fh:
        for (entity_type, entity_id), slots in sorted(texts.items()):
            if entity_id in known.get(entity_type, set()):
                row = {
                    "entity_type": entity_type,
                    "entity_id": entity_id,
                    "texts": [str(slots[k]["text"]) for k in sorted(slots)],
                    "labels": [label_of_row(slots[k]) for k in sorted(slots)],
                }
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def _item_content(bundle_dir: Path, meta: list[dict[str, Any]]) -> np.ndarray:
    """``[I, d]``: each item's title and categories embedded by the bundle's own text encoder (what the
    service compares a text request with, and finds a new item's neighbours by)."""
    from rec_contract.text_encoder import OnnxTextEncoder

    encoder = OnnxTextEncoder(bundle_dir)
    texts = [item_text(m["title"], m["categories"]) for m in meta]
    parts = [encoder.encode(texts[s : s + 256]) for s in range(0, len(texts), 256)]
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, 1), np.float32)


def _versions() -> dict[str, str]:
    out = {"torch": torch.__version__, "onnxruntime": ort.__version__, "onnx_opset": str(OPSET)}
    for package in ("profilerec", "onnx", "qdrant-client"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "unknown"
    return out


def _item_profile_matrix(ctx: RunContext, text_encoder_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Item profile vectors ``[I, K, d]`` and mask for the ridge fit: the run's, or the item text
    embedded with the bundle's text encoder when the run used none."""
    if ctx.profiles is not None:
        return ctx.profiles.item_vectors, ctx.profiles.item_mask
    from rec_contract.text_encoder import OnnxTextEncoder

    encoder = OnnxTextEncoder(text_encoder_dir)
    texts = [ctx.dataset.item_text(i) for i in range(ctx.dataset.n_items)]
    vectors = np.concatenate([encoder.encode(texts[s : s + 256]) for s in range(0, len(texts), 256)])
    return vectors[:, None, :], np.ones((len(texts), 1), bool)


def export_bundle(run_dir: str | Path, options: ExportOptions) -> Path:
    """Export ``run_dir`` (a training run folder) as a bundle under ``options.bundles_root``."""
    ctx = load_run_context(run_dir)
    model: Recommender = ctx.model
    model.eval()
    dataset = ctx.dataset
    text_dir = Path(options.text_encoder_dir)
    for name in TEXT_ENCODER_FILES:
        if not (text_dir / name).exists():
            raise ExportError(
                f"{text_dir / name} missing: run `profilerec-jobs export-text-encoder --out {text_dir}`"
            )
    text_dim = (
        ctx.profiles.dim if ctx.profiles is not None else int(_item_profile_matrix(ctx, text_dir)[0].shape[2])
    )
    k = ctx.profiles.k if ctx.profiles is not None else 1
    version = options.version or new_version(
        f"{dataset.name}-{model.kind}{'-proex' if model.uses_profiles else ''}"
    )
    root = Path(options.bundles_root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / version
    if final.exists():
        raise ExportError(f"{final} already exists: bundles are immutable, pick another version")
    tmp = root / f".{version}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()
    try:
        manifest = _write_bundle(tmp, ctx, options, version, text_dim, k)
        seal_manifest(tmp, manifest)
        verify_bundle(tmp)
        tmp.replace(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("bundle exported", extra={"bundle": str(final), "parity": manifest.parity})
    return final


PROFILE_AXES = {"profiles": {0: "B", 1: "K"}, "profile_mask": {0: "B", 1: "K"}}


def _write_bundle(
    out: Path, ctx: RunContext, options: ExportOptions, version: str, text_dim: int, k: int
) -> BundleManifest:
    model, dataset = ctx.model, ctx.dataset
    rng = np.random.default_rng(0)
    parity: dict[str, float] = {}
    sample = rng.choice(dataset.n_users, size=min(options.parity_users, dataset.n_users), replace=False)
    sample.sort()

    with torch.no_grad():
        item_vectors = model.encode_items().numpy().astype(np.float32)
        expected_users = model.encode_users(sample).numpy()
    item_dim = int(item_vectors.shape[1])

    dims = (item_dim, text_dim, k)
    collab_dim, first_input = _export_user_tower(out, ctx, rng, sample, expected_users, dims, parity)
    cold = _export_item_tower(out, ctx, options, rng, item_vectors, collab_dim, k, text_dim, parity)
    _write_arrays(out, ctx, options, item_vectors)
    return _manifest(ctx, options, version, (collab_dim, item_dim, text_dim, k), first_input, parity, cold)


def _export_user_tower(
    out: Path,
    ctx: RunContext,
    rng: np.random.Generator,
    sample: np.ndarray,
    expected_users: np.ndarray,
    dims: tuple[int, int, int],
    parity: dict[str, float],
) -> tuple[int, tuple[str, int]]:
    """Export the user tower, check it against the model on random and real users; returns the
    collaborative dimension and the tower's first input (``collab`` or ``history``) with its size."""
    model, dataset, split = ctx.model, ctx.dataset, ctx.split
    item_dim, text_dim, k = dims
    user_tower = model.user_tower()  # type: ignore[operator]
    if model.kind == "lightgcn":
        collab_users = model.collab_user_vectors()  # type: ignore[operator]
        collab_items = model.collab_item_vectors()  # type: ignore[operator]
        np.save(out / "collab_users.npy", collab_users.astype(np.float32))
        np.save(out / "collab_items.npy", collab_items.astype(np.float32))
        collab_dim = int(collab_users.shape[1])
        first_input = ("collab", collab_dim)
        real_first = collab_users[sample]
    else:
        collab_dim = item_dim
        first_input = ("history", dataset.n_items)
        real_first = split.train[sample].toarray().astype(np.float32)
    if ctx.profiles is not None:
        real_prof = ctx.profiles.user_vectors[sample]
        real_mask = ctx.profiles.user_mask[sample].astype(np.float32)
    else:
        real_prof = np.zeros((len(sample), k, text_dim), np.float32)
        real_mask = np.zeros((len(sample), k), np.float32)
    rand_prof, rand_mask = _random_profile_case(rng, 8, k, text_dim)
    rand_first = (
        rng.standard_normal((8, collab_dim)).astype(np.float32)
        if first_input[0] == "collab"
        else (rng.random((8, dataset.n_items)) < 0.02).astype(np.float32)
    )
    dummy = {
        first_input[0]: torch.from_numpy(rand_first),
        "profiles": torch.from_numpy(rand_prof),
        "profile_mask": torch.from_numpy(rand_mask),
    }
    _export_onnx(user_tower, dummy, out / "user_tower.onnx", {first_input[0]: {0: "B"}, **PROFILE_AXES})
    cases = [
        {first_input[0]: rand_first, "profiles": rand_prof, "profile_mask": rand_mask},
        {first_input[0]: real_first.astype(np.float32), "profiles": real_prof, "profile_mask": real_mask},
    ]
    parity["user_tower_max_abs"] = _parity(user_tower, out / "user_tower.onnx", cases)
    session = ort.InferenceSession(str(out / "user_tower.onnx"), providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    served = session.run(["vector"], {n: v for n, v in cases[1].items() if n in wanted})[0]
    parity["user_tower_vs_model_max_abs"] = float(np.abs(served - expected_users).max())
    if parity["user_tower_vs_model_max_abs"] >= PARITY_TOLERANCE:
        worst = parity["user_tower_vs_model_max_abs"]
        raise ExportError(f"user tower disagrees with the model's encode_users by {worst:.2e}")
    return collab_dim, first_input


def _export_item_tower(
    out: Path,
    ctx: RunContext,
    options: ExportOptions,
    rng: np.random.Generator,
    item_vectors: np.ndarray,
    collab_dim: int,
    k: int,
    text_dim: int,
    parity: dict[str, float],
) -> dict[str, Any]:
    """Export the item tower (the zero-shot path of new items): the model's own for LightGCN with
    profiles, else a ridge regression from the mean item profile embedding; returns how it was made."""
    model = ctx.model
    item_dim = int(item_vectors.shape[1])
    item_tower: nn.Module
    cold: dict[str, Any] = {}
    if model.kind == "lightgcn" and model.uses_profiles:
        item_tower = model.item_tower()  # type: ignore[operator]
        share = model.profile_weight
        weighted = "" if share == 1.0 else f"{share:g} x "
        cold["method"] = f"model item tower (zero collaborative part + {weighted}mean of mapped profiles)"
    else:
        vectors, mask = _item_profile_matrix(ctx, options.text_encoder_dir)
        weights = mask.astype(np.float32)[:, :, None]
        pooled = (vectors * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)
        has = mask.any(axis=1)
        weight, bias, stats = fit_ridge(pooled[has], item_vectors[has], options.ridge_alphas)
        item_tower = LinearColdItemTower(weight, bias)
        cold = {"method": "ridge regression from the mean item profile embedding to the item vector", **stats}
    item_prof, item_mask = _random_profile_case(rng, 8, k, text_dim)
    item_dummy = {
        "collab": torch.zeros(8, item_dim if model.kind != "lightgcn" else collab_dim),
        "profiles": torch.from_numpy(item_prof),
        "profile_mask": torch.from_numpy(item_mask),
    }
    _export_onnx(item_tower, item_dummy, out / "item_tower.onnx", {"collab": {0: "B"}, **PROFILE_AXES})
    parity["item_tower_max_abs"] = _parity(
        item_tower, out / "item_tower.onnx", [{n: t.numpy() for n, t in item_dummy.items()}]
    )
    return cold


def _write_arrays(out: Path, ctx: RunContext, options: ExportOptions, item_vectors: np.ndarray) -> None:
    """Item vectors, interactions, id maps, item metadata, the text encoder and content vectors."""
    dataset, split = ctx.dataset, ctx.split
    np.save(out / "item_vectors.npy", item_vectors)
    # The model's input history (what it was trained on), and what the service never recommends again:
    # every interaction the bundle was built from, all splits (evaluation splits are for measuring,
    # not for deciding what a person has seen), unless --seen train asks for the training split only.
    np.savez(out / "interactions.npz", **_csr_arrays(split.train))
    seen = split.train if options.seen == "train" else dataset.interaction_matrix()
    np.savez(out / "seen.npz", **_csr_arrays(seen))
    if ctx.profiles is not None:
        _write_profiles(out, ctx, dataset)
    (out / "users.json").write_text(json.dumps([str(u) for u in dataset.user_ids]))
    (out / "items.json").write_text(json.dumps([str(i) for i in dataset.item_ids]))
    popularity = np.asarray(split.train.sum(axis=0)).ravel().astype(int)
    snippets = _item_snippets(Path(ctx.profile_store) if ctx.profile_store else None, dataset)
    meta = [
        {
            "title": str(dataset.items["title"].iloc[i]),
            "categories": [str(c) for c in dataset.items["categories"].iloc[i]],
            "popularity": int(popularity[i]),
            "profile_snippet": snippets[i][:500],
        }
        for i in range(dataset.n_items)
    ]
    (out / "items_meta.json").write_text(json.dumps(meta, ensure_ascii=False))
    for name in TEXT_ENCODER_FILES:
        shutil.copyfile(Path(options.text_encoder_dir) / name, out / name)
    np.save(out / CONTENT_FILE, _item_content(out, meta))


def _manifest(
    ctx: RunContext,
    options: ExportOptions,
    version: str,
    dims: tuple[int, int, int, int],
    first_input: tuple[str, int],
    parity: dict[str, float],
    cold: dict[str, Any],
) -> BundleManifest:
    model, dataset, split = ctx.model, ctx.dataset, ctx.split
    collab_dim, item_dim, text_dim, k = dims
    store_version = ctx.profile_version or "none"
    return BundleManifest(
        bundle_version=version,
        model_kind=model.kind,
        proex=model.uses_profiles,
        collab_dim=collab_dim,
        item_dim=item_dim,
        dataset=DatasetInfo(
            name=dataset.name,
            source=ctx.dataset_source,
            fingerprint=dataset.fingerprint(),
            split_method=split.method,
            split_fingerprint=split.fingerprint(),
            n_users=dataset.n_users,
            n_items=dataset.n_items,
        ),
        profiles=ProfileInfo(
            store_version=store_version,
            store_path=str(Path(ctx.profile_store).resolve()) if ctx.profile_store else "",
            embedding_model=ctx.embedding_model or "all-MiniLM-L6-v2",
            text_dim=text_dim,
            k=k,
            strategy=ctx.profile_strategy or "",
        ),
        user_tower=TowerSpec(
            file="user_tower.onnx",
            inputs={
                first_input[0]: ["B", first_input[1]],
                "profiles": ["B", "K", text_dim],
                "profile_mask": ["B", "K"],
            },
            output="vector",
            output_dim=item_dim,
        ),
        item_tower=TowerSpec(
            file="item_tower.onnx",
            inputs={
                "collab": ["B", item_dim if model.kind != "lightgcn" else collab_dim],
                "profiles": ["B", "K", text_dim],
                "profile_mask": ["B", "K"],
            },
            output="vector",
            output_dim=item_dim,
        ),
        text_encoder=TowerSpec(file="text_encoder.onnx", inputs={}, output="embedding", output_dim=text_dim),
        items_collection=items_collection(version),
        profiles_collection=profiles_collection(store_version),
        metrics={k_: float(v) for k_, v in ctx.metrics.items() if isinstance(v, int | float)},
        parity=parity,
        training={
            "run_dir": str(Path(ctx.run_dir).resolve()),
            "seen": options.seen,
            "cold_item_tower": cold,
            **ctx.summary,
        },
        versions=_versions(),
    )
