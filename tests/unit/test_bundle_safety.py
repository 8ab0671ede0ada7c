"""A bundle is refused when its manifest names a path outside it, when a file the service loads has no
checksum, or when the live pointer leads outside the bundles root; /readyz then says "refused" or
"missing" and nothing more (the reason goes to the log)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from rec_contract.bundle import MANIFEST_FILE, BundleError, promote, resolve_pointer, verify_bundle
from service.app import create_app
from service.bundle_runtime import load_bundle
from service.settings import ServiceSettings
from tests.unit._fakes import write_toy_bundle


def _edit_manifest(folder: Path, edit) -> None:
    path = folder / MANIFEST_FILE
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))


@pytest.mark.parametrize("bad", ["/etc/passwd", "../v0/users.json", "sub/../../x", "a\\..\\b"])
def test_manifest_paths_must_be_relative_and_inside(tmp_path: Path, bad: str) -> None:
    folder = write_toy_bundle(tmp_path, "v1")
    _edit_manifest(folder, lambda raw: raw["files"].update({bad: {"sha256": "0" * 64, "bytes": 0}}))
    with pytest.raises(BundleError, match="relative and inside"):
        verify_bundle(folder)


def test_a_tower_file_outside_the_bundle_is_refused(tmp_path: Path) -> None:
    folder = write_toy_bundle(tmp_path, "v1")
    _edit_manifest(folder, lambda raw: raw["user_tower"].update({"file": "/tmp/evil.onnx"}))
    with pytest.raises(BundleError, match="relative and inside"):
        verify_bundle(folder)


def test_a_symlink_out_of_the_bundle_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside.onnx"
    outside.write_bytes(b"user_tower.onnx")
    folder = write_toy_bundle(tmp_path / "bundles", "v1")
    (folder / "user_tower.onnx").unlink()
    (folder / "user_tower.onnx").symlink_to(outside)  # same bytes, same checksum: only the path is wrong
    with pytest.raises(BundleError, match="outside the bundle"):
        verify_bundle(folder)


def test_every_file_the_service_loads_needs_a_checksum(tmp_path: Path) -> None:
    folder = write_toy_bundle(tmp_path, "v1")
    (folder / "users.json").write_text('["1"]')  # present, but not in the manifest
    with pytest.raises(BundleError, match=r"lists no checksum for .*users\.json"):
        load_bundle(folder)
    with pytest.raises(BundleError, match="lists no checksum"):
        load_bundle(folder, verify_checksums=False)  # even when checksums are not verified


def test_current_pointing_outside_the_bundles_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "bundles"
    write_toy_bundle(root, "v1")
    promote(root, "v1")
    assert resolve_pointer(root) == (root / "v1").resolve()
    elsewhere = write_toy_bundle(tmp_path / "elsewhere", "v9")  # a valid bundle, in another folder
    (root / "current").unlink()
    (root / "current").symlink_to(elsewhere)
    with pytest.raises(BundleError, match="outside the bundles root"):
        resolve_pointer(root)


def test_readyz_names_states_not_paths_or_reasons(tmp_path: Path) -> None:
    root = tmp_path / "bundles"
    folder = write_toy_bundle(root, "v1")
    promote(root, "v1")
    (folder / "users.json").write_text("[]")  # makes the bundle refused at load
    settings = ServiceSettings(
        bundles_root=root,
        online_dir=tmp_path / "online",
        redis_url="redis://127.0.0.1:1/0",  # nothing listens: unreachable
        redis_timeout_s=0.2,
        reload_interval_s=0,
        feedback_log=tmp_path / "feedback.jsonl",
        catalog_log=tmp_path / "catalog.jsonl",
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["checks"] == {"bundle": "refused", "store": "ok", "redis": "unreachable"}
        assert str(tmp_path) not in response.text and "users.json" not in response.text
        answer = client.get("/v1/users/1/recommendations")
        assert answer.status_code == 503 and str(tmp_path) not in answer.text
