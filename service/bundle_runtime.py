"""A bundle loaded for serving: manifest, ONNX sessions, id maps and arrays, opened once.

The service holds one :class:`LoadedBundle` at a time in a :class:`BundleHolder`; a new bundle is loaded
completely (verified, sessions opened, items collection ensured) before the holder switches to it, so
requests in flight keep the object they started with and none fails during a switch.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from rec_contract.bundle import (
    BundleError,
    BundleManifest,
    TowerSpec,
    inside_bundle,
    manifest_paths,
    read_manifest,
    require_listed,
    verify_bundle,
)
from rec_contract.content import CONTENT_FILE
from rec_contract.text_encoder import META_FILE, ONNX_FILE, TOKENIZER_FILE, OnnxTextEncoder
from service.profiles import ITEM_PROFILE_MASK, ITEM_PROFILES, PROFILE_TEXTS, USER_PROFILE_MASK, USER_PROFILES

log = logging.getLogger(__name__)


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # one request is a handful of rows: threads cost more than they give
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


# The tower inputs the service knows how to build (see service.towers); a bundle whose manifest names
# another input is refused at load, with the input named.
KNOWN_INPUTS = {"collab", "history", "profiles", "profile_mask"}


class OnnxTower:
    """One exported tower. Inputs are named as in the manifest's :class:`TowerSpec`."""

    def __init__(self, folder: Path, spec: TowerSpec) -> None:
        self.spec = spec
        self.session = _session(folder / spec.file)
        names = {i.name for i in self.session.get_inputs()}
        if names != set(spec.inputs):
            raise BundleError(
                f"{folder / spec.file}: inputs {sorted(names)} differ from the manifest {sorted(spec.inputs)}"
            )
        unknown = names - KNOWN_INPUTS
        if unknown:
            raise BundleError(f"{folder / spec.file}: the service cannot build the inputs {sorted(unknown)}")

    @property
    def input_names(self) -> set[str]:
        return set(self.spec.inputs)

    def input_width(self, name: str) -> int:
        return int(self.spec.inputs[name][-1])

    def __call__(self, **inputs: np.ndarray) -> np.ndarray:
        feeds = {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in inputs.items()}
        (out,) = self.session.run([self.spec.output], feeds)
        return np.asarray(out, dtype=np.float32)


@dataclass
class SeenIndex:
    """User x item interactions as CSR arrays (no scipy in the service)."""

    indptr: np.ndarray
    indices: np.ndarray

    def items_of(self, user: int) -> np.ndarray:
        return self.indices[self.indptr[user] : self.indptr[user + 1]]


@dataclass
class LoadedBundle:
    path: Path
    manifest: BundleManifest
    user_ids: list[str]
    item_ids: list[str]
    user_index: dict[str, int]
    item_index: dict[str, int]
    items_meta: list[dict[str, Any]]
    popular_order: np.ndarray
    history: SeenIndex  # the model's input history (what it was trained on)
    seen: SeenIndex  # what is never recommended again (every interaction the bundle was built from)
    item_vectors: np.ndarray
    item_content: np.ndarray | None  # [n_items, text_dim], L2-normalised (rec_contract.content)
    collab_users: np.ndarray | None
    collab_items: np.ndarray | None
    user_tower: OnnxTower
    item_tower: OnnxTower
    text_encoder: OnnxTextEncoder
    categories: frozenset[str] = frozenset()  # of the catalogue's items (request filters are checked)
    loaded_at: float = field(default_factory=time.time)

    @property
    def version(self) -> str:
        return self.manifest.bundle_version

    @property
    def kind(self) -> str:
        return self.manifest.model_kind

    @property
    def n_items(self) -> int:
        return len(self.item_ids)


def _load_json_list(path: Path) -> list[Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: unreadable ({exc})") from exc
    if not isinstance(value, list):
        raise BundleError(f"{path}: expected a JSON list")
    return value


def _csr(path: Path, n_users: int) -> SeenIndex:
    with np.load(path) as z:
        csr = SeenIndex(indptr=z["indptr"].astype(np.int64), indices=z["indices"].astype(np.int64))
    if len(csr.indptr) != n_users + 1:
        raise BundleError(f"{path}: indptr length does not match the users")
    return csr


def _item_content(folder: Path, n_items: int, dim: int) -> np.ndarray | None:
    """The bundle's item content vectors; a bundle exported before they existed falls back to the
    normalised mean of each item's profile vectors (weaker: they describe who watched it), else None
    (text requests then go through the user tower alone)."""
    path = folder / CONTENT_FILE
    if path.exists():
        content = np.load(path).astype(np.float32)
    elif (folder / ITEM_PROFILES).exists() and (folder / ITEM_PROFILE_MASK).exists():
        log.warning("bundle has no %s: item content falls back to the mean item profile", CONTENT_FILE)
        vectors = np.load(folder / ITEM_PROFILES)
        weights = np.load(folder / ITEM_PROFILE_MASK).astype(np.float32)[..., None]
        content = ((vectors * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)).astype(np.float32)
        content /= np.maximum(np.linalg.norm(content, axis=1, keepdims=True), 1e-12)
    else:
        return None
    if content.shape != (n_items, dim):
        raise BundleError(f"{path}: shape {content.shape} != ({n_items}, {dim})")
    return content


SERVED_FILES = ("users.json", "items.json", "items_meta.json", "item_vectors.npy", "interactions.npz")
SERVED_IF_PRESENT = (
    "seen.npz",
    CONTENT_FILE,
    META_FILE,
    USER_PROFILES,
    USER_PROFILE_MASK,
    ITEM_PROFILES,
    ITEM_PROFILE_MASK,
    PROFILE_TEXTS,
)


def served_files(folder: Path, manifest: BundleManifest) -> set[str]:
    """Every file of the bundle the service reads (each must have a checksum in the manifest)."""
    names = {*SERVED_FILES, ONNX_FILE, TOKENIZER_FILE, *manifest_paths(manifest)}
    if manifest.model_kind == "lightgcn":
        names |= {"collab_users.npy", "collab_items.npy"}
    return names | {name for name in SERVED_IF_PRESENT if (folder / name).exists()}


def load_bundle(folder: str | Path, verify_checksums: bool = True) -> LoadedBundle:
    """Verify and open a bundle folder. Raises :class:`BundleError` with the offending file.

    Every file read is listed with its checksum in the manifest (verified unless ``verify_checksums``
    is off) and inside the folder."""
    folder = Path(folder).resolve()
    started = time.perf_counter()
    manifest = (
        verify_bundle(folder, check_hashes=verify_checksums) if verify_checksums else read_manifest(folder)
    )
    loaded = served_files(folder, manifest)
    for name in loaded:
        inside_bundle(folder, name)
    require_listed(folder, manifest, loaded)
    user_ids = [str(u) for u in _load_json_list(folder / "users.json")]
    item_ids = [str(i) for i in _load_json_list(folder / "items.json")]
    items_meta = _load_json_list(folder / "items_meta.json")
    if len(item_ids) != manifest.dataset.n_items or len(items_meta) != len(item_ids):
        raise BundleError(
            f"{folder}: items.json/items_meta.json do not match n_items={manifest.dataset.n_items}"
        )
    if len(user_ids) != manifest.dataset.n_users:
        raise BundleError(f"{folder}: users.json does not match n_users={manifest.dataset.n_users}")
    item_vectors = np.load(folder / "item_vectors.npy", mmap_mode="r")
    if item_vectors.shape != (len(item_ids), manifest.item_dim):
        raise BundleError(
            f"{folder / 'item_vectors.npy'}: shape {item_vectors.shape} "
            f"!= ({len(item_ids)}, {manifest.item_dim})"
        )
    collab_users = collab_items = None
    if manifest.model_kind == "lightgcn":
        collab_users = np.load(folder / "collab_users.npy")
        collab_items = np.load(folder / "collab_items.npy")
        if collab_users.shape != (len(user_ids), manifest.collab_dim):
            raise BundleError(
                f"{folder / 'collab_users.npy'}: shape {collab_users.shape} does not match the manifest"
            )
    history = _csr(folder / "interactions.npz", len(user_ids))
    seen = _csr(folder / "seen.npz", len(user_ids)) if (folder / "seen.npz").exists() else history
    popularity = np.array([int(m.get("popularity", 0)) for m in items_meta])
    bundle = LoadedBundle(
        path=folder,
        manifest=manifest,
        user_ids=user_ids,
        item_ids=item_ids,
        user_index={u: i for i, u in enumerate(user_ids)},
        item_index={it: i for i, it in enumerate(item_ids)},
        items_meta=items_meta,
        popular_order=np.argsort(-popularity, kind="stable"),
        history=history,
        seen=seen,
        item_vectors=np.asarray(item_vectors, dtype=np.float32),
        item_content=_item_content(folder, len(item_ids), manifest.profiles.text_dim),
        collab_users=collab_users,
        collab_items=collab_items,
        user_tower=OnnxTower(folder, manifest.user_tower),
        item_tower=OnnxTower(folder, manifest.item_tower),
        text_encoder=OnnxTextEncoder(folder),
        categories=frozenset(str(c) for m in items_meta for c in m.get("categories") or ()),
    )
    log.info(
        "bundle loaded",
        extra={
            "bundle_version": manifest.bundle_version,
            "model_kind": manifest.model_kind,
            "proex": manifest.proex,
            "seconds": round(time.perf_counter() - started, 3),
        },
    )
    return bundle
