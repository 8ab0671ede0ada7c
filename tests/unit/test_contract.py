"""The shared contract: atomic writes, event logs, bundle manifests and pointers, naming."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rec_contract.atomic import atomic_directory, atomic_write_text
from rec_contract.bundle import (
    BundleError,
    list_versions,
    promote,
    resolve_pointer,
    verify_bundle,
)
from rec_contract.event_log import append_events, read_events
from rec_contract.naming import check_version, generation_key, point_id, user_vector_key
from rec_contract.profile_store import read_profile_vectors, write_profile_vectors
from tests.unit._fakes import write_toy_bundle


def test_atomic_write_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_directory_keeps_old_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "d"
    with atomic_directory(target) as tmp:
        (tmp / "f").write_text("old")
    with pytest.raises(RuntimeError), atomic_directory(target) as tmp:
        (tmp / "f").write_text("new")
        raise RuntimeError("crash while writing")
    assert (target / "f").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_event_log_reads_only_complete_lines(tmp_path: Path) -> None:
    log = tmp_path / "feedback.jsonl"
    append_events(log, [{"user_id": "1", "item_id": "2"}, {"user_id": "1", "item_id": "3"}])
    with log.open("ab") as fh:
        fh.write(b'{"user_id": "partial"')  # a writer mid-line
    chunk = read_events(log, 0)
    assert [e["item_id"] for e in chunk.events] == ["2", "3"]
    again = read_events(log, chunk.end_offset)
    assert again.events == [] and again.end_offset == chunk.end_offset
    with log.open("ab") as fh:
        fh.write(b', "item_id": "4"}\nnot json\n')
    rest = read_events(log, chunk.end_offset)
    assert [e["item_id"] for e in rest.events] == ["4"] and rest.malformed == 1


def test_an_append_after_a_torn_line_keeps_every_new_event(tmp_path: Path) -> None:
    """A writer killed mid-write leaves a line without its newline: the next batch must not be glued
    to it (its first event would be lost in one malformed line)."""
    log = tmp_path / "feedback.jsonl"
    append_events(log, [{"user_id": "1", "item_id": "2"}])
    with log.open("ab") as fh:
        fh.write(b'{"user_id": "killed", "item')  # torn: never acknowledged
    append_events(log, [{"user_id": "1", "item_id": "3"}, {"user_id": "1", "item_id": "4"}])
    chunk = read_events(log, 0)
    assert [e["item_id"] for e in chunk.events] == ["2", "3", "4"] and chunk.malformed == 1
    assert chunk.end_offset == log.stat().st_size


def test_event_log_rejects_watermark_past_end(tmp_path: Path) -> None:
    log = tmp_path / "f.jsonl"
    append_events(log, [{"a": 1}])
    with pytest.raises(ValueError, match="truncated"):
        read_events(log, 10_000)


def test_naming_is_stable_and_checked() -> None:
    assert point_id("item", "42") == point_id("item", "42") != point_id("user", "42")
    assert user_vector_key("v1", "7") == "profilerec:uv:v1:7"
    assert generation_key("user", "7") == "profilerec:gen:user:7"
    with pytest.raises(ValueError):
        check_version("bad version/with slash")


def test_profile_vectors_roundtrip_with_masks(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    entries = [
        ("user", "a", rng.standard_normal((4, 8))),
        ("user", "b", rng.standard_normal((2, 8))),
        ("item", "x", rng.standard_normal((4, 8))),
    ]
    write_profile_vectors(tmp_path, entries, "toy-embedder", "v1")
    pv = read_profile_vectors(tmp_path, "user", ["b", "missing", "a"])
    assert pv.vectors.shape == (3, 4, 8)
    assert pv.mask.tolist() == [[True, True, False, False], [False] * 4, [True] * 4]
    np.testing.assert_allclose(pv.vectors[0, :2], entries[1][2].astype(np.float32))
    pooled = pv.mean_pooled()
    np.testing.assert_allclose(pooled[0], entries[1][2].astype(np.float32).mean(axis=0), rtol=1e-6)
    assert not pooled[1].any()


def test_bundle_verification_names_the_bad_file(tmp_path: Path) -> None:
    folder = write_toy_bundle(tmp_path, "v1")
    assert verify_bundle(folder).bundle_version == "v1"
    (folder / "item_tower.onnx").write_bytes(b"ITEM_TOWER.ONNX")  # same size, different content
    with pytest.raises(BundleError, match=r"item_tower\.onnx: checksum does not match"):
        verify_bundle(folder)
    (folder / "item_tower.onnx").unlink()
    with pytest.raises(BundleError, match=r"item_tower\.onnx: listed in the manifest but missing"):
        verify_bundle(folder)


def test_bundle_manifest_version_and_schema_checked(tmp_path: Path) -> None:
    folder = write_toy_bundle(tmp_path, "v1")
    raw = json.loads((folder / "manifest.json").read_text())
    raw["contract_version"] = 99
    (folder / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="contract_version 99 is not supported"):
        verify_bundle(folder)
    raw["contract_version"] = 1
    del raw["model_kind"]
    (folder / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="does not match the schema"):
        verify_bundle(folder)


def test_promote_and_previous_pointer(tmp_path: Path) -> None:
    write_toy_bundle(tmp_path, "v1")
    write_toy_bundle(tmp_path, "v2")
    with pytest.raises(BundleError, match="no such bundle pointer"):
        resolve_pointer(tmp_path)
    assert promote(tmp_path, "v1") is None
    assert promote(tmp_path, "v2") == "v1"
    assert resolve_pointer(tmp_path).name == "v2"
    assert resolve_pointer(tmp_path, "previous").name == "v1"
    assert list_versions(tmp_path) == ["v1", "v2"]


def test_service_and_contract_do_not_import_torch() -> None:
    code = (
        "import sys, service.app, service.recommender, rec_contract.bundle, rec_contract.text_encoder;"
        "bad = [m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules];"
        "sys.exit(f'service imported {bad}' if bad else 0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_log_follower_reads_complete_lines_and_rebuilds_after_a_replacement(tmp_path: Path) -> None:
    from rec_contract.event_log import LogFollower

    log = tmp_path / "f.jsonl"
    follower = LogFollower(log)
    assert follower.poll() == ([], False)  # no file yet
    append_events(log, [{"a": 1}, {"a": 2}])
    assert follower.poll() == ([{"a": 1}, {"a": 2}], False)
    assert follower.poll() == ([], False)
    with log.open("ab") as fh:
        fh.write(b'{"a": 3}')  # a line being written: not yet
    assert follower.poll() == ([], False)
    with log.open("ab") as fh:
        fh.write(b"\n")
    assert follower.poll() == ([{"a": 3}], False)
    replacement = tmp_path / "g.jsonl"
    append_events(replacement, [{"b": 1}])
    replacement.replace(log)  # rotated or rewritten: read again from the start, and say so
    assert follower.poll() == ([{"b": 1}], True)
