"""Issue 17, item 6, shortened: the fault parts of ``python -m benchmarks resilience`` against
``python -m service`` (2 workers, keys required) on a private copy of the session's LightGCN
deployment: Redis SIGKILLed under load, the Qdrant engine's Qdrant gone or hanging after the bundle
loaded (and back: served again without a restart; for a refusing Qdrant, also from the service's
start), a corrupt bundle promoted while serving, the service SIGKILLed during feedback writes, the
refresh job SIGKILLed at random points (each rerun converges to the uninterrupted run's state)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import fault_parts
from benchmarks.day_in_the_life import Deployment
from benchmarks.refresh_kills import refresh_kills

pytestmark = pytest.mark.integration


@pytest.fixture
def deployment(artefacts, data_dir: Path, tmp_path: Path) -> Deployment:
    return Deployment.copy_from(
        tmp_path / "deployment",
        bundle_dir=artefacts.bundles["lightgcn"],
        store=artefacts.store,
        text_encoder_dir=artefacts.text_encoder,
        qdrant_path=artefacts.qdrant_path,
        data_dir=data_dir,
    )


def test_a_redis_kill_under_load_fails_no_request_and_keeps_exclusions(deployment: Deployment) -> None:
    figures = fault_parts.redis_kill(deployment, threads=2, phase_s=2.0, probe_users=3)
    assert figures["failed"] == 0, figures["statuses"]
    assert figures["before_requests"] and figures["during_requests"] and figures["after_requests"]
    assert figures["excluded_items_checked"] >= 9
    assert figures["excluded_items_returned"] == 0
    assert figures["readyz_after"] == "ready"


@pytest.mark.parametrize("mode", ["down", "hang"])
def test_an_unreachable_or_hanging_qdrant_gets_a_503_within_the_timeout_then_serves_again(
    deployment: Deployment, mode: str
) -> None:
    figures = fault_parts.qdrant_unavailable(deployment, mode, timeout_s=1.0, requests=6)
    assert figures["before_ok"] == figures["before_requests"] == 6  # served from Qdrant first
    assert figures["503_retry_after_json"] == figures["requests"] == 6, figures["other"]
    assert figures["within_timeout_plus_1s"] == 6, figures["max_s"]  # bounded (the figure: the benchmark)
    assert figures["bodies_naming_the_url"] == 0  # the address and exception text go to the log only
    assert figures["readyz_status"] == 503 and figures["readyz_checks"]["store"] == "unreachable"
    assert figures["readyz_checks"]["bundle"] == "ok"  # it failed after the bundle was loaded
    # Qdrant back: the same service processes serve again, no restart
    assert figures["recovery_s"] is not None
    assert figures["after_ok"] == figures["after_requests"] == 6, figures["after_statuses"]
    # ready again (readiness may lag a request or two: it asks Qdrant afresh), and stays ready
    assert figures["readyz_after_s"] is not None, figures["readyz_after_failed_checks"]
    assert figures["readyz_after_status"] == 200, figures["readyz_after_statuses"]
    assert figures["same_service_process"]
    if mode == "down":  # started while Qdrant refused, without a bundle watcher: loads once it answers
        assert figures["startup_503_retry_after_json"] == figures["startup_requests"] == 6
        assert figures["startup_readyz_checks"]["store"] == "unreachable"
        assert figures["startup_readyz_checks"]["bundle"] == "waiting"  # not "refused": the bundle is fine
        # the workers log JSON with the reason (a spawned worker has its own logging to configure)
        records = [json.loads(line) for line in (deployment.root / "service.log").read_text().splitlines()
                   if line.startswith("{")]  # fmt: skip
        waiting = [r for r in records if r["msg"] == "starting without a bundle"]
        assert waiting and all("qdrant at" in r["reason"] for r in waiting)
        assert any(r["msg"] == "serving bundle" for r in records)  # info lines of the workers too
        assert figures["startup_ready_after_s"] is not None
        assert figures["startup_after_ok"] == figures["startup_after_requests"] == 6
        assert figures["startup_same_service_process"]


def test_a_refresh_killed_at_random_points_converges_to_the_uninterrupted_run(
    deployment: Deployment,
) -> None:
    figures = refresh_kills(deployment, kills=3)
    assert figures["reference_status"] == "partial"  # the unusable record is quarantined
    assert figures["reference_users"] > 0 and figures["reference_items"] > 0
    assert figures["reference_quarantined"] == 1 and figures["dead_letters"] == 1
    assert figures["second_run_status"] == "noop"
    assert figures["killed"] == 3
    assert figures["reruns_ok"] == figures["attempts"]
    assert figures["converged"] == figures["attempts"], figures["not_converged"]


def test_a_corrupt_bundle_promoted_while_serving_is_refused_and_the_old_one_serves(
    deployment: Deployment,
) -> None:
    figures = fault_parts.corrupt_bundle(deployment, threads=2, phase_s=2.0)
    assert figures["failed"] == 0 and figures["requests"] > 0, figures["statuses"]
    assert set(figures["served_versions"]) == {"live"}
    assert figures["readyz"]["checks"]["promoted_bundle"] == "refused"
    assert figures["readyz"]["checks"]["bundle"] == "ok"
    assert not figures["readyz_has_paths"]


def test_every_feedback_event_acknowledged_before_a_sigkill_is_in_the_log(deployment: Deployment) -> None:
    figures = fault_parts.feedback_kills(deployment, kills=3, threads=3)
    assert figures["events_acked"] > 0
    assert figures["acked_missing_from_log"] == 0 and figures["acked_missing_via_reader"] == 0
    assert figures["malformed_lines"] <= figures["kills"]  # at most one torn write per kill, skipped
