"""``profilerec-pipeline retrain`` trains with the profile store the refresh writes into
(``PROFILEREC_PROFILE_STORE`` / ``--profile-store``), not only the one the live bundle's manifest names
(the issue-15 replay runs a private copy of a deployment whose manifest names the original store)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from offline_jobs.cli import pipeline as pipeline_cli


def _captured_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, argv: list[str]) -> Any:
    from offline_jobs.publish import rollout

    seen: dict[str, Any] = {}

    def fake_retrain(options: Any, client: Any = None) -> dict[str, Any]:
        seen["options"] = options
        return {"candidate": "none"}

    monkeypatch.setattr(rollout, "retrain", fake_retrain)
    monkeypatch.setattr(pipeline_cli, "_qdrant", lambda args, required=True: _NoClient())
    assert pipeline_cli.main(["--work-dir", str(tmp_path), *argv]) == 0
    return seen["options"]


class _NoClient:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_retrain_reads_the_profile_store_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PROFILEREC_PROFILE_STORE", str(tmp_path / "live-store"))
    assert _captured_options(monkeypatch, tmp_path, ["retrain"]).profile_store == tmp_path / "live-store"
    flag = ["retrain", "--profile-store", str(tmp_path / "other")]
    assert _captured_options(monkeypatch, tmp_path, flag).profile_store == tmp_path / "other"


def test_retrain_without_the_setting_uses_the_live_bundles_store(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PROFILEREC_PROFILE_STORE", raising=False)
    assert _captured_options(monkeypatch, tmp_path, ["retrain"]).profile_store is None
