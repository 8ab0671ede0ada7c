"""Cheap stand-ins for unit tests: a bag-of-words hashing embedder, a toy bundle."""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from rec_contract.bundle import BundleManifest, DatasetInfo, ProfileInfo, TowerSpec, seal_manifest


class HashEmbedder:
    model_id = "hash-64"
    dim = 64

    def __init__(self) -> None:
        self.calls = 0

    def embed(self, texts):
        self.calls += 1
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"[a-z]+", text.lower()):
                h = int.from_bytes(hashlib.md5(word.encode()).digest()[:4], "little")
                out[row, h % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


def toy_manifest(version: str) -> BundleManifest:
    tower = TowerSpec(file="user_tower.onnx", inputs={"collab": ["B", 4]}, output="vector", output_dim=4)
    return BundleManifest(
        bundle_version=version,
        model_kind="lightgcn",
        proex=True,
        collab_dim=4,
        item_dim=4,
        dataset=DatasetInfo(
            name="toy", fingerprint="f", split_method="random", split_fingerprint="s", n_users=1, n_items=1
        ),
        profiles=ProfileInfo(store_version="p1", embedding_model="e", text_dim=8, k=4),
        user_tower=tower,
        item_tower=tower.model_copy(update={"file": "item_tower.onnx"}),
        text_encoder=tower.model_copy(update={"file": "text_encoder.onnx"}),
        items_collection=f"items_{version}",
        profiles_collection="profiles_p1",
    )


def write_toy_bundle(root: Path, version: str) -> Path:
    """A sealed bundle folder ``root/version`` whose tower files are placeholders (not ONNX)."""
    folder = root / version
    folder.mkdir(parents=True)
    for name in ("user_tower.onnx", "item_tower.onnx", "text_encoder.onnx"):
        (folder / name).write_bytes(name.encode())
    seal_manifest(folder, toy_manifest(version))
    return folder


@contextlib.contextmanager
def app_without_bundle(tmp_path: Path, **extra: object) -> Iterator[Any]:
    """A TestClient of the real app on empty paths under ``tmp_path`` (no bundle, no Redis)."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import ServiceSettings

    settings = ServiceSettings(
        bundles_root=tmp_path / "bundles",
        online_dir=tmp_path / "online",
        redis_url=None,
        reload_interval_s=0,
        feedback_log=tmp_path / "feedback.jsonl",
        catalog_log=tmp_path / "catalog.jsonl",
        **extra,  # type: ignore[arg-type]
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client
