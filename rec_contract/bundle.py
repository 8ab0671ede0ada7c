"""The artefact bundle: what training/export writes and the service reads.

A bundle is one immutable, versioned folder under a bundles root::

    <root>/<version>/
        manifest.json          BundleManifest (below), with a sha256 for every other file
        user_tower.onnx        user tower (ProEx Algorithm 2: collaborative part + mean of mapped profiles)
        item_tower.onnx        item tower for items known only by text (zero-shot)
        text_encoder.onnx      sentence encoder (all-MiniLM-L6-v2), pooled and L2-normalised
        tokenizer.json         its tokenizer
        users.json / items.json            raw ids in index order
        items_meta.json        title, categories, popularity per item index
        item_vectors.npy       final item vectors [n_items, item_dim] (the Qdrant items collection)
        collab_users.npy       LightGCN only: collaborative user vectors [n_users, d]
        collab_items.npy       LightGCN only: collaborative item vectors (cold-start fold-in)
        interactions.npz       the model's input history (the training split, CSR)
        seen.npz               every interaction of every split: never recommended again (CSR)
        item_content.npy       each item's title and categories embedded by the text encoder [n_items, d]
                               (text requests, neighbours of new items; see rec_contract.content)
        user_profiles.npy ...  ProEx only: profile vectors, masks and texts (profile_texts.jsonl)
    <root>/current -> <version>   the live pointer (a symlink switched atomically)
    <root>/previous -> <version>  what `current` pointed at before the last promotion (rollback)

Writers build the folder in a temporary sibling and rename it into place; readers verify the manifest
and every checksum and refuse a bundle that does not match, with a message naming the file. Every path
a manifest names is relative and inside the bundle (no absolute path, no ``..``, no symlink out), and
a pointer must resolve to a bundle directly under its bundles root.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from rec_contract import CONTRACT_VERSION
from rec_contract.atomic import point_symlink
from rec_contract.naming import check_version

MANIFEST_FILE = "manifest.json"
CURRENT_POINTER = "current"
PREVIOUS_POINTER = "previous"

ModelKind = Literal["lightgcn", "multvae"]


class BundleError(RuntimeError):
    """A bundle is missing, incomplete, corrupted or of an unsupported contract version."""


class FileEntry(BaseModel):
    sha256: str
    bytes: int


class TowerSpec(BaseModel):
    """Names and shapes of an ONNX tower's inputs and output ("B" is the batch axis)."""

    file: str
    inputs: dict[str, list[int | str]]
    output: str
    output_dim: int


class DatasetInfo(BaseModel):
    name: str
    source: str = Field(
        "", description="what load_dataset() takes: a registry name or a saved dataset folder"
    )
    fingerprint: str
    split_method: str
    split_fingerprint: str
    n_users: int
    n_items: int


class ProfileInfo(BaseModel):
    store_version: str
    store_path: str = Field(
        "", description="the profile store the model was trained with (the refresh updates it)"
    )
    embedding_model: str
    text_dim: int
    k: int
    strategy: str = ""


class BundleManifest(BaseModel):
    contract_version: int = CONTRACT_VERSION
    bundle_version: str
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    model_kind: ModelKind
    proex: bool
    collab_dim: int
    item_dim: int
    dataset: DatasetInfo
    profiles: ProfileInfo
    user_tower: TowerSpec
    item_tower: TowerSpec
    text_encoder: TowerSpec
    items_collection: str
    profiles_collection: str
    metrics: dict[str, float] = Field(default_factory=dict)
    parity: dict[str, float] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)
    versions: dict[str, str] = Field(default_factory=dict)
    files: dict[str, FileEntry] = Field(default_factory=dict)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def seal_manifest(folder: Path, manifest: BundleManifest) -> BundleManifest:
    """Checksum every file in ``folder`` (except the manifest) into the manifest and write it."""
    check_version(manifest.bundle_version)
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != MANIFEST_FILE:
            rel = path.relative_to(folder).as_posix()
            files[rel] = FileEntry(sha256=sha256_file(path), bytes=path.stat().st_size)
    sealed = manifest.model_copy(update={"files": files})
    (folder / MANIFEST_FILE).write_text(sealed.model_dump_json(indent=2))
    return sealed


def read_manifest(folder: str | Path) -> BundleManifest:
    folder = Path(folder)
    path = folder / MANIFEST_FILE
    if not path.exists():
        raise BundleError(f"{path}: manifest missing (not a bundle, or an interrupted write)")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path}: manifest is not valid JSON ({exc.msg})") from exc
    if raw.get("contract_version") != CONTRACT_VERSION:
        raise BundleError(
            f"{path}: contract_version {raw.get('contract_version')} is not supported "
            f"(expected {CONTRACT_VERSION})"
        )
    try:
        return BundleManifest.model_validate(raw)
    except ValidationError as exc:
        raise BundleError(f"{path}: manifest does not match the schema: {exc}") from exc


def inside_bundle(folder: Path, rel: str) -> Path:
    """``folder / rel`` for a path a manifest names, refused unless it is relative, has no ``..`` and
    resolves (symlinks followed) inside the bundle."""
    pure = PurePosixPath(rel)
    if not rel or "\\" in rel or pure.is_absolute() or ".." in pure.parts or "\x00" in rel:
        raise BundleError(
            f"{folder}: the manifest names {rel!r}: paths must be relative and inside the bundle"
        )
    path = folder / pure
    if not path.resolve().is_relative_to(folder.resolve()):
        raise BundleError(f"{folder}: {rel!r} resolves outside the bundle")
    return path


def manifest_paths(manifest: BundleManifest) -> set[str]:
    """Every path the manifest names (checksummed files and tower files)."""
    towers = {manifest.user_tower.file, manifest.item_tower.file, manifest.text_encoder.file}
    return set(manifest.files) | towers


def require_listed(folder: Path, manifest: BundleManifest, names: set[str]) -> None:
    """Refuse a bundle when one of ``names`` (files a reader loads) has no checksum in the manifest."""
    unlisted = names - set(manifest.files)
    if unlisted:
        raise BundleError(f"{folder}: manifest lists no checksum for {sorted(unlisted)}")


def verify_bundle(folder: str | Path, check_hashes: bool = True) -> BundleManifest:
    """Read the manifest and check that every listed file exists with its size and checksum."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    for rel in manifest_paths(manifest):
        inside_bundle(folder, rel)
    require_listed(
        folder, manifest, {manifest.user_tower.file, manifest.item_tower.file, manifest.text_encoder.file}
    )
    for rel, entry in manifest.files.items():
        path = folder / rel
        if not path.is_file():
            raise BundleError(f"{path}: listed in the manifest but missing")
        if path.stat().st_size != entry.bytes:
            raise BundleError(f"{path}: size {path.stat().st_size} != {entry.bytes} in the manifest")
        if check_hashes and sha256_file(path) != entry.sha256:
            raise BundleError(f"{path}: checksum does not match the manifest (corrupted or modified)")
    return manifest


def resolve_pointer(root: str | Path, pointer: str = CURRENT_POINTER) -> Path:
    """The bundle folder a pointer (``current``/``previous``) refers to: it must resolve to a folder
    with a manifest (a dangling pointer is an error that says where it points)."""
    link = Path(root) / pointer
    if not link.is_symlink() and not link.exists():
        raise BundleError(f"{link}: no such bundle pointer (build and promote a bundle first)")
    target = link.resolve()
    shown = link.readlink() if link.is_symlink() else link
    if not (target / MANIFEST_FILE).is_file():
        raise BundleError(
            f"{link} -> {shown} is broken: {target} is not a bundle "
            "(point it again with `profilerec-pipeline publish <bundle dir>`)"
        )
    if target.parent != Path(root).resolve():
        raise BundleError(
            f"{link} -> {shown} points outside the bundles root {Path(root).resolve()} (refused)"
        )
    return target


def list_versions(root: str | Path) -> list[str]:
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(
        p.name for p in root.iterdir() if p.is_dir() and not p.is_symlink() and (p / MANIFEST_FILE).exists()
    )


def promote(root: str | Path, version: str) -> str | None:
    """Point ``current`` at ``version`` (and ``previous`` at the old one). Returns the old version."""
    root = Path(root)
    target = root / check_version(version)
    verify_bundle(target, check_hashes=False)
    old: str | None = None
    current = root / CURRENT_POINTER
    if (current.resolve() / MANIFEST_FILE).is_file():  # a live pointer that resolves (not a dangling one)
        old = current.resolve().name
        if old != version:
            _point(root / PREVIOUS_POINTER, current.resolve())
    _point(current, target)
    live = resolve_pointer(root)
    if live != target.resolve():
        raise BundleError(f"{current} resolves to {live}, not to {target} after the promotion")
    return old


def _point(link: Path, target: Path) -> None:
    try:
        point_symlink(link, target)
    except OSError as exc:
        raise BundleError(f"could not point {link} at {target}: {exc}") from exc


def new_version(prefix: str) -> str:
    """A sortable, unique bundle version: ``<prefix>-YYYYmmddTHHMMSS-<pid>``."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return check_version(f"{prefix}-{stamp}-{os.getpid() % 100000}")
