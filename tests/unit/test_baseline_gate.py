"""The gate that knows the baseline: the model's validation Recall@20 against EASE's, the operator's
tolerance (``--max-gap-to-ease`` / ``PROFILEREC_MAX_GAP_TO_EASE``), and the setting reaching the retrain."""

from __future__ import annotations

from pathlib import Path

import pytest

from offline_jobs.publish.rollout import baseline_gate
from offline_jobs.settings import JobSettings
from tests.unit.test_pipeline_retrain_store import _captured_options

BASELINES = {
    "ease": {"params": {"l2": 500.0}, "valid": {"recall@20": 0.30}, "test": {"recall@20": 0.29}},
    "mostpop": {"params": {}, "valid": {"recall@20": 0.15}, "test": {"recall@20": 0.15}},
}


def test_off_by_default_it_reports_the_gap_and_passes() -> None:
    result = baseline_gate(0.25, BASELINES, None)
    assert result.passed and result.ease == 0.30 and result.gap == pytest.approx(0.05)
    assert "trails by 0.0500" in result.note


def test_a_model_trailing_by_more_than_the_tolerance_is_refused() -> None:
    assert not baseline_gate(0.25, BASELINES, 0.02).passed
    assert baseline_gate(0.29, BASELINES, 0.02).passed  # within the tolerance
    ahead = baseline_gate(0.31, BASELINES, 0.0)
    assert ahead.passed and ahead.gap == pytest.approx(-0.01) and "ahead by 0.0100" in ahead.note


def test_without_ease_the_gate_cannot_refuse_and_says_why() -> None:
    skipped = {"ease": {"skipped": "EASE skipped: 30000 items > 20000"}}
    result = baseline_gate(0.1, skipped, 0.0)
    assert result.passed and result.gap is None and "30000 items" in result.note
    assert baseline_gate(0.1, {}, 0.0).note == "EASE was not fitted for this run"


def test_the_setting_is_typed_and_reaches_the_retrain(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PROFILEREC_MAX_GAP_TO_EASE", raising=False)
    assert JobSettings().max_gap_to_ease is None
    assert _captured_options(monkeypatch, tmp_path, ["retrain"]).max_gap_to_ease is None
    monkeypatch.setenv("PROFILEREC_MAX_GAP_TO_EASE", "0.01")
    assert JobSettings().max_gap_to_ease == 0.01
    assert _captured_options(monkeypatch, tmp_path, ["retrain"]).max_gap_to_ease == 0.01
    flag = ["retrain", "--max-gap-to-ease", "0.03"]
    assert _captured_options(monkeypatch, tmp_path, flag).max_gap_to_ease == 0.03
    monkeypatch.setenv("PROFILEREC_MAX_GAP_TO_EASE", "-1")
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        JobSettings()
