"""Session fixtures that build real artefacts once: a small profile store embedded with the real MiniLM,
trained LightGCN and Mult-VAE runs (ProEx-fused, a few epochs), the exported text encoder, and the
exported, published bundles in a real embedded Qdrant."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from rec_contract.profile_store import write_profile_vectors, write_profiles
from training.data import InteractionDataset, default_split_method, load_dataset, split_dataset

STORE_VERSION = "it-store-1"
# The service is secure by default: the tests' apps get keys and their clients send them.
TEST_API_KEY = "it-api-key"
TEST_ADMIN_KEY = "it-admin-key"
KEYS = {"X-API-Key": TEST_API_KEY, "X-Admin-Key": TEST_ADMIN_KEY}
N_PROFILED_USERS = 200
N_PROFILED_ITEMS = 400


@dataclass
class Artefacts:
    root: Path
    dataset: InteractionDataset
    store: Path
    text_encoder: Path
    runs: dict[str, Path]
    bundles: dict[str, Path]
    qdrant_path: Path


def _profile_rows(dataset: InteractionDataset) -> tuple[list[dict], list[tuple[str, str, list[str]]]]:
    """Two short profiles per user (liked titles; their genres) and per item (title + genres;
    its audience size), for a sample of users and items, the rest left without profiles."""
    split = split_dataset(dataset, default_split_method(dataset.name), seed=2024)
    train = split.train.tocsr()
    pop = np.asarray(train.sum(axis=0)).ravel()
    entries: list[tuple[str, str, list[str]]] = []
    for u in range(N_PROFILED_USERS):
        items = train[u].indices[:15]
        titles = ", ".join(str(dataset.items["title"].iloc[i]) for i in items)
        genres = sorted({g for i in items for g in dataset.items["categories"].iloc[i]})
        entries.append(
            ("user", str(dataset.user_ids[u]), [f"Enjoyed {titles}.", f"Likes {', '.join(genres)} movies."])
        )
    for i in range(N_PROFILED_ITEMS):
        entries.append(
            (
                "item",
                str(dataset.item_ids[i]),
                [dataset.item_text(i), f"Watched by {int(pop[i])} users in training."],
            )
        )
    rows = []
    for entity_type, entity_id, texts in entries:
        for slot, text in enumerate(texts):
            rows.append(
                {
                    "entity_type": entity_type,
                    "entity_id": entity_id,
                    "slot": slot,
                    "text": text,
                    "strategy": "extractive",
                    "stage": "original" if slot == 0 else "new",
                    "model": "extractive",
                    "prompt_version": "test",
                    "seed": 0,
                    "created_at": "2026-01-01T00:00:00+00:00",
                    "is_fallback": False,
                    "quality": "{}",
                    "version": STORE_VERSION,
                }
            )
    return rows, entries


@pytest.fixture(scope="session")
def artefacts(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Artefacts:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from offline_jobs.jobs.embedding import MiniLMEmbedder, export_text_encoder
    from offline_jobs.publish.promote import publish
    from offline_jobs.publish.qdrant_upload import qdrant_client
    from training.export import ExportOptions, export_bundle
    from training.models import TrainConfig
    from training.proex import ProExConfig
    from training.runs import RunSpec, execute_run

    root = tmp_path_factory.mktemp("artefacts")
    dataset = load_dataset("movielens-100k", data_dir)
    rows, entries = _profile_rows(dataset)
    embedder = MiniLMEmbedder()
    texts = [t for _, _, ts in entries for t in ts]
    vectors = embedder.embed(texts)
    store = root / "store"
    write_profiles(store, rows)
    offset = 0
    vector_entries = []
    for entity_type, entity_id, ts in entries:
        vector_entries.append((entity_type, entity_id, vectors[offset : offset + len(ts)]))
        offset += len(ts)
    write_profile_vectors(store, vector_entries, embedder.model_id, STORE_VERSION)

    text_encoder = export_text_encoder(root / "text_encoder")
    train = TrainConfig(epochs=4, eval_every=2, patience=5, seed=7, progress=False)
    proex = ProExConfig(n_profiles=2)
    variants = {  # bundle key -> (model, ProEx config)
        "lightgcn": ("lightgcn", proex),
        "multvae": ("multvae", proex),
        "lightgcn-input-fusion": ("lightgcn", ProExConfig(n_profiles=2, fusion_stage="input")),
    }
    runs = {}
    for kind, (model, config) in variants.items():
        spec = RunSpec(
            dataset="movielens-100k",
            model=model,
            proex=config,
            profiles_path=str(store),
            train=train,
            out=str(root / "runs" / kind),
            data_dir=str(data_dir),
        )
        runs[kind] = execute_run(spec).run_dir
    qdrant_path = root / "qdrant"
    bundles = {}
    client = qdrant_client(path=qdrant_path)
    try:
        for kind, run_dir in runs.items():
            bundle_root = root / f"bundles-{kind}"
            bundles[kind] = export_bundle(
                run_dir,
                ExportOptions(
                    bundles_root=bundle_root, text_encoder_dir=Path(text_encoder), version=f"it-{kind}-1"
                ),
            )
            publish(bundles[kind], client, store)
    finally:
        client.close()
    return Artefacts(root, dataset, store, Path(text_encoder), runs, bundles, qdrant_path)


def service_settings(artefacts: Artefacts, kind: str, tmp_path: Path, redis_url: str | None, **extra):
    """Service settings on one of the session's bundles, with private logs and online state."""
    from service.settings import ServiceSettings

    values = {
        "bundles_root": artefacts.bundles[kind].parent,
        "qdrant_path": artefacts.qdrant_path,
        "online_dir": tmp_path / "online",
        "redis_url": redis_url,
        "reload_interval_s": 0,
        "feedback_log": tmp_path / "feedback" / "feedback.jsonl",
        "catalog_log": tmp_path / "feedback" / "catalog.jsonl",
        "api_key": TEST_API_KEY,
        "admin_api_key": TEST_ADMIN_KEY,
        **extra,
    }
    return ServiceSettings(**values)


class ThreadedServer:
    """A real uvicorn server for an app, on a loopback port, in a background thread."""

    def __init__(self, app, port: int) -> None:
        import threading

        import uvicorn

        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadedServer:
        import time

        import httpx

        self.thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not start")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@dataclass
class LiveEnv:
    """A private copy of the published LightGCN deployment that a test may modify."""

    root: Path
    bundles_root: Path
    bundle: Path
    store: Path
    qdrant_path: Path
    feedback_log: Path
    catalog_log: Path
    redis_url: str

    def service_settings(self, **extra):
        from service.settings import ServiceSettings

        values = {
            "work_dir": self.root / "work",
            "bundles_root": self.bundles_root,
            "qdrant_path": self.qdrant_path,
            "redis_url": self.redis_url,
            "reload_interval_s": 0,
            "feedback_log": self.feedback_log,
            "catalog_log": self.catalog_log,
            "api_key": TEST_API_KEY,
            "admin_api_key": TEST_ADMIN_KEY,
            **extra,
        }
        return ServiceSettings(**values)

    def refresh_settings(self, **extra):
        from offline_jobs.refresh.state import RefreshSettings

        values = {
            "work_dir": self.root / "work",
            "bundles_root": self.bundles_root,
            "feedback_log": self.feedback_log,
            "catalog_log": self.catalog_log,
            "profile_store": self.store,
            "qdrant_path": self.qdrant_path,
            "redis_url": self.redis_url,
            "admin_api_key": TEST_ADMIN_KEY,
            **extra,
        }
        return RefreshSettings(**values)

    def env(self) -> dict[str, str]:
        """The same settings as environment variables (for subprocesses)."""
        return {
            "PROFILEREC_WORK_DIR": str(self.root / "work"),
            "PROFILEREC_BUNDLES_ROOT": str(self.bundles_root),
            "PROFILEREC_FEEDBACK_LOG": str(self.feedback_log),
            "PROFILEREC_CATALOG_LOG": str(self.catalog_log),
            "PROFILEREC_PROFILE_STORE": str(self.store),
            "PROFILEREC_QDRANT_PATH": str(self.qdrant_path),
            "PROFILEREC_REDIS_URL": self.redis_url,
            "PROFILEREC_API_KEY": TEST_API_KEY,
            "PROFILEREC_ADMIN_API_KEY": TEST_ADMIN_KEY,
        }


@pytest.fixture
def live_env(artefacts: Artefacts, tmp_path: Path, redis_server) -> LiveEnv:
    import shutil

    import redis

    from rec_contract.bundle import promote

    redis.Redis.from_url(redis_server.url).flushall()
    bundles_root = tmp_path / "bundles"
    bundle = bundles_root / artefacts.bundles["lightgcn"].name
    shutil.copytree(artefacts.bundles["lightgcn"], bundle)
    promote(bundles_root, bundle.name)
    store = tmp_path / "store"
    shutil.copytree(artefacts.store, store)
    qdrant_path = tmp_path / "qdrant"
    shutil.copytree(artefacts.qdrant_path, qdrant_path)
    return LiveEnv(
        root=tmp_path,
        bundles_root=bundles_root,
        bundle=bundle,
        store=store,
        qdrant_path=qdrant_path,
        feedback_log=tmp_path / "feedback" / "feedback.jsonl",
        catalog_log=tmp_path / "feedback" / "catalog.jsonl",
        redis_url=redis_server.url,
    )
