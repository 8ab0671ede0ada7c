"""Profile vectors -> Qdrant (qdrant-client local mode): one point per entity, K-vector MAX_SIM
multivector + mean vector, payload with the texts, the alias switched to the new version."""

from __future__ import annotations

import numpy as np
import pytest

from offline_jobs.publish.qdrant_upload import qdrant_client, upload_store
from rec_contract.naming import PROFILE_MEAN_VECTOR, PROFILE_MULTIVECTOR, PROFILES_ALIAS, point_id
from rec_contract.profile_store import write_profile_vectors, write_profiles

pytestmark = pytest.mark.integration


def make_store(folder, version, k=3, dim=8, n_users=4, n_items=3):
    rng = np.random.default_rng(0)
    rows, entries = [], []
    for entity_type, n in (("user", n_users), ("item", n_items)):
        for i in range(1, n + 1):
            vecs = rng.standard_normal((k, dim)).astype(np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            entries.append((entity_type, str(i), vecs))
            for slot in range(k):
                rows.append(
                    {
                        "entity_type": entity_type, "entity_id": str(i), "slot": slot,
                        "text": f"{entity_type} {i} profile {slot}", "strategy": "proex",
                        "stage": "original" if slot == 0 else "new", "model": "m", "prompt_version": "p",
                        "seed": 1, "created_at": "2026-01-01T00:00:00+00:00", "is_fallback": slot == 2,
                        "quality": {}, "version": version,
                    }
                )  # fmt: skip
    write_profiles(folder, rows)
    write_profile_vectors(folder, entries, "test-embedder", version)
    return entries


def test_upload_local_mode_multivector_alias(tmp_path):
    entries = make_store(tmp_path / "v1", "v1")
    make_store(tmp_path / "v2", "v2")
    client = qdrant_client(path=tmp_path / "qdrant")
    try:
        report = upload_store(tmp_path / "v1", client)
        assert report["collection"] == "profiles_v1" and report["counts"] == {"user": 4, "item": 3}
        uid = point_id("user", "2")
        (point,) = client.retrieve("profiles_v1", [uid], with_vectors=True, with_payload=True)
        assert point.payload["texts"] == ["user 2 profile 0", "user 2 profile 1", "user 2 profile 2"]
        assert point.payload["is_fallback"] == [0, 0, 1] and point.payload["any_fallback"] == 1
        assert point.payload["entity_type"] == "user" and point.payload["version"] == "v1"
        multi = np.asarray(point.vector[PROFILE_MULTIVECTOR])
        stored = next(v for t, i, v in entries if t == "user" and i == "2")
        assert multi.shape == (3, 8) and np.allclose(multi, stored, atol=1e-5)
        mean = np.asarray(point.vector[PROFILE_MEAN_VECTOR])
        assert abs(np.linalg.norm(mean) - 1) < 1e-5
        # MAX_SIM search with one of the profile vectors finds its entity first
        hits = client.query_points(
            PROFILES_ALIAS, query=stored[1:2].tolist(), using=PROFILE_MULTIVECTOR, limit=1
        )
        assert hits.points[0].id == uid
        # a new version replaces the alias target atomically
        upload_store(tmp_path / "v2", client)
        aliases = {a.alias_name: a.collection_name for a in client.get_aliases().aliases}
        assert aliases[PROFILES_ALIAS] == "profiles_v2" and client.collection_exists("profiles_v1")
    finally:
        client.close()
