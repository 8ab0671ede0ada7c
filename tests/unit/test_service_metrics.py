"""The service's Prometheus series that describe its state (not latency)."""

from __future__ import annotations

from prometheus_client import REGISTRY

from service.metrics import set_model_info


def _served(version: str) -> float | None:
    return REGISTRY.get_sample_value(
        "profilerec_model_info",
        {"bundle_version": version, "model_kind": "lightgcn", "proex": "true", "dataset": "d"},
    )


def test_model_info_marks_the_served_bundle_and_unmarks_the_previous_one() -> None:
    set_model_info("v-test-1", "lightgcn", True, "d")
    assert _served("v-test-1") == 1
    set_model_info("v-test-2", "lightgcn", True, "d")  # a reload: no clear(), which workers cannot do
    assert _served("v-test-1") == 0 and _served("v-test-2") == 1
    set_model_info("v-test-2", "lightgcn", True, "d")  # the same bundle again: still served
    assert _served("v-test-2") == 1
