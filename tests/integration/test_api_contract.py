"""The OpenAPI document is the contract: schemathesis generates requests from it (valid and invalid)
against the real app on a scratch deployment (a private copy of a trained bundle, its own logs and
stores, a real redis-server) over HTTP, and every built-in check must pass: no 5xx, every status
documented, every body (errors included) matching its documented schema, invalid data refused.

Deterministic (derandomised Hypothesis, no example database) so a finding reproduces."""

from __future__ import annotations

import pytest

from service.app import create_app
from tests.integration.conftest import KEYS, ThreadedServer

pytestmark = pytest.mark.integration

EXAMPLES_PER_OPERATION = 30  # x 2 modes x 9 operations: about 500 requests, well under a minute


def _run_operation(operation, mode, base_url: str, counts: dict[str, int], findings: list[str]) -> None:
    """Hypothesis-generated cases of one operation in one mode, each sent and validated."""
    from hypothesis import HealthCheck, Phase, given, settings

    key = f"{operation.method.upper()} {operation.path} {mode.value}"

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case) -> None:
        counts[key] = counts.get(key, 0) + 1
        response = case.call(base_url=base_url, headers=KEYS, timeout=30)
        try:
            case.validate_response(response)
        except (AssertionError, ExceptionGroup) as exc:
            findings.append(f"{key}: {exc}\n  {case.as_curl_command()}"[:2000])

    check()


def test_generated_requests_conform_to_the_openapi_document(live_env, free_port: int) -> None:
    import schemathesis
    from schemathesis import GenerationMode

    app = create_app(live_env.service_settings(feedback_types="click,like,rating"))
    findings: list[str] = []
    counts: dict[str, int] = {}
    with ThreadedServer(app, free_port) as server:
        schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 9
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                _run_operation(operation, mode, server.url, counts, findings)
    total = sum(counts.values())
    assert total >= 300, counts
    assert not findings, f"{len(findings)} findings in {total} cases:\n" + "\n".join(findings[:10])
