"""Publish a bundle to the online stores and move the live pointer: promotion and rollback.

Publishing a bundle:

1. the items collection ``items_<bundle version>`` is created and filled from the bundle's item vectors
   and metadata (idempotent: an existing collection of the same version is left as is);
2. the profiles collection the bundle names must exist (uploaded from the profile store when missing);
3. promotion points the bundle pointer ``current`` at the bundle (``previous`` keeps the old one) and
   moves the Qdrant aliases ``items``/``profiles``; the running service notices the pointer and
   switches without a restart.

With the embedded Qdrant (a folder), only one process may open the storage: publish before the service
starts, or let the running service create the items collection itself when it loads the new bundle
(it does), in which case pass ``client=None`` here and only the pointer moves.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from rec_contract.bundle import (
    PREVIOUS_POINTER,
    BundleError,
    promote,
    read_manifest,
    resolve_pointer,
    verify_bundle,
)
from rec_contract.naming import ITEMS_ALIAS, PROFILES_ALIAS
from rec_contract.qdrant_schema import ITEMS_PAYLOAD_INDEXES, item_points, items_vectors_config

log = logging.getLogger(__name__)


def ensure_items_collection(client: QdrantClient, bundle_dir: Path) -> bool:
    """Create and fill the bundle's items collection if it does not exist. True if created."""
    manifest = read_manifest(bundle_dir)
    name = manifest.items_collection
    if client.collection_exists(name):
        return False
    vectors = np.load(bundle_dir / "item_vectors.npy")
    item_ids = [str(i) for i in json.loads((bundle_dir / "items.json").read_text())]
    meta = json.loads((bundle_dir / "items_meta.json").read_text())
    client.create_collection(name, vectors_config=items_vectors_config(int(vectors.shape[1])))
    with warnings.catch_warnings():  # local mode says its payload indexes do nothing: known, harmless
        warnings.filterwarnings("ignore", message="Payload indexes have no effect", category=UserWarning)
        for field_name, schema in ITEMS_PAYLOAD_INDEXES.items():
            client.create_payload_index(name, field_name=field_name, field_schema=schema)
    for batch in item_points(item_ids, vectors, meta):
        client.upsert(name, points=batch, wait=True)
    log.info("items collection created", extra={"collection": name, "points": len(item_ids)})
    return True


def ensure_profiles_collection(client: QdrantClient, bundle_dir: Path, store: Path | None) -> bool:
    """Make sure the profiles collection the bundle reads exists; upload it from ``store`` if not."""
    manifest = read_manifest(bundle_dir)
    name = manifest.profiles_collection
    if client.collection_exists(name):
        return False
    if store is None:
        if manifest.proex:
            raise BundleError(
                f"profiles collection {name} is missing and no profile store was given to upload"
            )
        client.create_collection(name, vectors_config=_empty_profiles_config(manifest.profiles.text_dim))
        return True
    from offline_jobs.publish.qdrant_upload import upload_store

    upload_store(store, client, version=manifest.profiles.store_version, set_alias=False)
    return True


def _empty_profiles_config(dim: int) -> dict[str, models.VectorParams]:
    from rec_contract.qdrant_schema import profiles_vectors_config

    return profiles_vectors_config(dim)


def switch_aliases(client: QdrantClient, bundle_dir: Path) -> None:
    """Point ``items`` and ``profiles`` at the bundle's collections in one atomic alias operation."""
    manifest = read_manifest(bundle_dir)
    current = {a.alias_name for a in client.get_aliases().aliases}
    ops: list[Any] = []
    for alias, collection in (
        (ITEMS_ALIAS, manifest.items_collection),
        (PROFILES_ALIAS, manifest.profiles_collection),
    ):
        if alias in current:
            ops.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)))
        ops.append(
            models.CreateAliasOperation(
                create_alias=models.CreateAlias(collection_name=collection, alias_name=alias)
            )
        )
    client.update_collection_aliases(change_aliases_operations=ops)


def publish(
    bundle_dir: str | Path,
    client: QdrantClient | None,
    profile_store: str | Path | None = None,
    make_live: bool = True,
) -> dict[str, Any]:
    """Create the bundle's collections (when a client is given) and, if ``make_live``, promote it."""
    bundle_dir = Path(bundle_dir).resolve()
    manifest = verify_bundle(bundle_dir)
    report: dict[str, Any] = {"bundle": manifest.bundle_version}
    if client is not None:
        report["items_collection_created"] = ensure_items_collection(client, bundle_dir)
        report["profiles_collection_created"] = ensure_profiles_collection(
            client, bundle_dir, Path(profile_store) if profile_store else None
        )
    if make_live:
        report["previous"] = promote(bundle_dir.parent, manifest.bundle_version)
        if client is not None:
            switch_aliases(client, bundle_dir)
        report["live"] = manifest.bundle_version
    log.info("bundle published", extra=report)
    return report


def rollback(bundles_root: str | Path, client: QdrantClient | None = None) -> dict[str, Any]:
    """Make the previous bundle live again (its collections are kept, so this is instant)."""
    root = Path(bundles_root)
    target = resolve_pointer(root, PREVIOUS_POINTER)
    old = promote(root, target.name)
    if client is not None:
        switch_aliases(client, target)
    report = {"live": target.name, "rolled_back_from": old}
    log.info("rolled back", extra=report)
    return report
