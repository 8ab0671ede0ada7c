"""``profilerec-pipeline``, the path ``make demo`` and the compose bootstrap take: bootstrap (train ->
export -> publish) on MovieLens-100k with a prepared profile store, a resumed re-run that redoes
nothing, status, and clear errors instead of tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from offline_jobs.cli.pipeline import main as pipeline
from rec_contract.bundle import list_versions, read_manifest, resolve_pointer, verify_bundle


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict, str]:
    code = pipeline(list(argv))
    captured = capsys.readouterr()
    body = json.loads(captured.out) if code == 0 else {}
    return code, body, captured.err


def test_bootstrap_builds_a_live_bundle_and_resumes(
    artefacts, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    common = ["--work-dir", str(work), "--data-dir", str(data_dir)]
    boot = [
        "bootstrap",
        "--dataset", "movielens-100k",
        "--profiles-from", str(artefacts.store),
        "--k", "2",
        "--epochs", "2",
        "--eval-every", "1",
    ]  # fmt: skip

    code, report, _ = _run(capsys, *common, *boot)
    assert code == 0, report
    bundles = work / "bundles"
    live = resolve_pointer(bundles)
    assert report["bundle"] == live.name and report["run"]["recall@20"] > 0
    verify_bundle(live)
    manifest = read_manifest(live)
    assert manifest.model_kind == "multvae" and manifest.proex and manifest.profiles.k == 2
    assert set(report["baselines"]) == {"ease", "itemknn", "mostpop"}  # beside the model, same split
    assert report["vs_ease"]["ease"] == report["baselines"]["ease"]["valid_recall@20"] > 0
    assert report["vs_ease"]["model"] == report["valid"]["recall@20"] and report["vs_ease"]["passed"]
    assert report["comparison"][0].startswith("valid R@20: Mult-VAE+ProEx ")
    assert manifest.training["baselines"]["ease"]["params"]["l2"] > 0
    assert (work / "qdrant").is_dir() and (work / "text_encoder" / "text_encoder.onnx").exists()

    code, again, _ = _run(capsys, *common, *boot)  # resumed: no new training, export or publish
    assert code == 0 and again["bundle"] == live.name and again["publish"] == "already live"
    assert list_versions(bundles) == [live.name]

    code, status, _ = _run(capsys, *common, "status")
    assert code == 0 and status["current"]["version"] == live.name
    assert str(status["previous"]).startswith("none")

    code, _, err = _run(capsys, *common, "rollback")  # nothing to roll back to: a message, exit 2
    assert code == 2 and "previous" in err and "Traceback" not in err
    assert resolve_pointer(bundles).name == live.name


def test_bootstrap_tunes_and_refuses_a_model_that_trails_ease(
    artefacts, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    boot = [
        "--work-dir", str(work), "--data-dir", str(data_dir),
        "bootstrap", "--dataset", "movielens-100k", "--profiles-from", str(artefacts.store), "--k", "2",
        "--epochs", "1", "--eval-every", "1", "--tune", "--trials", "2",
    ]  # fmt: skip
    code, _, err = _run(capsys, *boot, "--max-gap-to-ease", "0")  # one epoch trails EASE
    assert code == 3 and "trails EASE" in err and "Traceback" not in err
    assert list_versions(work / "bundles") == []  # nothing exported, nothing live
    run_dir = work / "runs" / "bootstrap-movielens-100k-multvae-proex"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["tuning"]["trials"] == 2 and (run_dir / "tuning.sqlite3").exists()
    for key, value in config["tuning"]["best_params"].items():
        assert {**config["hyperparameters"], **config["proex"]}[key] == value
