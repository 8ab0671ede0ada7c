"""``profilerec-pipeline prune``: old bundles go with what the service derived from them; the live
bundle, the rollback target, the newest ``--keep`` and every collection still in use stay."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from qdrant_client import QdrantClient, models

from offline_jobs.cli.pipeline import main as pipeline
from offline_jobs.publish.retention import PRUNED_PREFIX, derived_paths, prune_bundles
from rec_contract.bundle import list_versions, promote, resolve_pointer
from tests.unit._fakes import write_toy_bundle

VERSIONS = ["v1", "v2", "v3", "v4", "v5"]  # created in this order


@pytest.fixture
def deployment(tmp_path: Path) -> tuple[Path, Path]:
    root, online = tmp_path / "bundles", tmp_path / "online"
    online.mkdir()
    for version in VERSIONS:
        write_toy_bundle(root, version)
        time.sleep(0.002)  # distinct creation times
        for path in derived_paths(online, version):
            if path.name.startswith("edge-"):
                (path / "segments").mkdir(parents=True)
                (path / "segments" / "data").write_bytes(b"x" * 100)
            else:
                path.write_text("{}\n")
    (online / "profiles-p1.jsonl").write_text("{}\n")  # per profile store, shared: never touched
    promote(root, "v2")
    promote(root, "v1")  # a rollback-like state: current v1 (oldest), previous v2
    return root, online


def _collections(client: QdrantClient) -> set[str]:
    return {c.name for c in client.get_collections().collections}


def test_prune_keeps_pointed_and_newest_bundles_and_removes_the_rest_with_their_state(
    deployment: tuple[Path, Path],
) -> None:
    root, online = deployment
    client = QdrantClient(":memory:")
    params = models.VectorParams(size=4, distance=models.Distance.DOT)
    for name in ("items_v3", "items_v3_content", "items_v4", "items_v5", "profiles_p1"):
        client.create_collection(name, vectors_config=params)
    client.update_collection_aliases(
        change_aliases_operations=[
            models.CreateAliasOperation(
                create_alias=models.CreateAlias(collection_name="items_v4", alias_name="a")
            )
        ]
    )

    dry = prune_bundles(root, 1, online, client, dry_run=True)
    assert dry["kept"] == ["v1", "v2", "v5"] and [p["version"] for p in dry["pruned"]] == ["v3", "v4"]
    assert list_versions(root) == VERSIONS and all(p.exists() for p in derived_paths(online, "v3"))

    report = prune_bundles(root, 1, online, client)

    assert list_versions(root) == ["v1", "v2", "v5"]
    assert resolve_pointer(root).name == "v1" and resolve_pointer(root, "previous").name == "v2"
    for version in ("v3", "v4"):
        assert not any(p.exists() for p in derived_paths(online, version))
    for version in ("v1", "v2", "v5"):
        assert all(p.exists() for p in derived_paths(online, version))
    assert (online / "profiles-p1.jsonl").exists()
    # v3's collections go; v4's is an alias target; the profiles collection is shared with kept bundles
    assert _collections(client) == {"items_v4", "items_v5", "profiles_p1"}
    assert report["bytes_freed"] == dry["bytes_freed"] > 0
    assert prune_bundles(root, 1, online, client)["pruned"] == []  # idempotent


def test_an_interrupted_prune_is_finished_by_the_next_run(deployment: tuple[Path, Path]) -> None:
    root, online = deployment
    (root / "v3").rename(root / f"{PRUNED_PREFIX}v3")  # stopped right after hiding the folder
    report = prune_bundles(root, 3, online)
    assert report["leftovers"] == [f"{PRUNED_PREFIX}v3"] and report["pruned"] == []
    assert not (root / f"{PRUNED_PREFIX}v3").exists()
    assert not any(p.exists() for p in derived_paths(online, "v3"))
    assert list_versions(root) == ["v1", "v2", "v4", "v5"]


def test_the_cli_prunes_with_a_dry_run_first(
    deployment: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root, online = deployment
    common = ["--work-dir", str(root.parent), "--bundles-root", str(root)]
    assert pipeline([*common, "prune", "--keep", "2", "--online-dir", str(online), "--dry-run"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dry_run"] and [p["version"] for p in out["pruned"]] == ["v3"]
    assert list_versions(root) == VERSIONS
    assert pipeline([*common, "prune", "--keep", "0"]) == 2  # a clear error, nothing removed
    assert "keep must be >= 1" in capsys.readouterr().err
    assert pipeline([*common, "prune", "--keep", "2", "--online-dir", str(online)]) == 0
    assert list_versions(root) == ["v1", "v2", "v4", "v5"]
