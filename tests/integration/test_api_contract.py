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
SEMANTIC_REFUSALS: list[str] = []  # schema-valid requests refused for a rule no schema states


def refused_only_for_rules_no_schema_states(ctx, response, case) -> None:
    """Schemathesis' ``positive_data_acceptance``, made exact for this API: a request valid by the
    schema may be refused (400/422) only for what a schema cannot state (ids not in the catalogue,
    categories no item has, limits of comma-separated lists, timestamps after tomorrow, profile texts
    and vectors of different lengths, a profile-store version that is not live), never by the schema
    validator: a type, pattern, length or required field the document got wrong is a finding."""
    if not case.meta.generation.mode.is_positive or response.status_code not in (400, 422):
        return
    error = response.json()["error"]
    details = error.get("details") or {}
    problems = details.get("problems") or []
    semantic = (
        error["code"] in {"unknown_items", "bad_request"}
        or bool({"unknown", "limit", "valid"} & set(details))
        or (bool(problems) and all(p["message"].startswith("Value error, ") for p in problems))
    )
    if not semantic:
        raise AssertionError(f"a schema-valid request failed schema validation: {error}")
    SEMANTIC_REFUSALS.append(error["code"])


def _run_operation(operation, mode, base_url: str, counts: dict[str, int], findings: list[str]) -> None:
    """Hypothesis-generated cases of one operation in one mode, each sent and validated."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.specs.openapi.checks import positive_data_acceptance

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
            case.validate_response(
                response,
                excluded_checks=[positive_data_acceptance],
                additional_checks=[refused_only_for_rules_no_schema_states],
            )
        except (AssertionError, BaseExceptionGroup) as exc:
            findings.append(f"{key}: {exc}\n  {case.as_curl_command()}"[:2000])

    try:
        check()
    except Unsatisfiable:
        # no invalid request exists for an operation without inputs (GET /healthz ...)
        assert mode.is_negative and key not in counts, key


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
    assert SEMANTIC_REFUSALS  # the exact positive-data check ran (unknown ids and categories are generated)
    assert not findings, f"{len(findings)} findings in {total} cases:\n" + "\n".join(findings[:10])
