"""Property-based fuzzing of the HTTP API with schemathesis, over real HTTP against a real server.

Every operation of the served OpenAPI document gets positive (schema-valid) and negative
(schema-violating) requests with the API key. Checks: never a 5xx, only documented status codes
and content types, responses match their documented schema, errors have the contract's shape and
errors have the contract's shape.

Not applied: `positive_data_acceptance` (a schema-valid JSON object in `notebook` is still refused
with 422 `invalid_notebook` unless it is a real ipynb: that check belongs to nbformat, which the
OpenAPI document does not embed) and `negative_data_rejection` (schemathesis counts a request as
negative when only its generated Authorization header was invalid, but we always send a valid key).

The number of requests sent is printed (run with `-s` to see it) and must reach a floor.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any

import httpx
import hypothesis
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.server_process import ServerProcess

EXAMPLES = int(os.environ.get("AGORA_FUZZ_EXAMPLES", "40"))  # per operation and mode


def error_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx/5xx body is `{"error": {"code": snake_case, "message": str}}`."""
    if response.status_code < 400:
        return None
    body = json.loads(response.content)
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    code = body["error"]["code"]
    assert code and code.replace("_", "").isalpha() and code.islower(), body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    return True


def test_schemathesis_fuzz(server_process: ServerProcess) -> None:
    server = server_process.base_url
    schema = schemathesis.openapi.from_url(f"{server}/api/v1/openapi.json")
    headers = server_process.headers
    # A few notebooks so some generated ids hit something.
    for nid in ("0", "a", "A", "_", "-", "nb"):
        httpx.post(f"{server}/api/v1/notebooks", json={"id": nid}, headers=headers)
    sent: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    base_checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
        error_shape,
    ]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15

    def make_runner(operation: Any, mode: GenerationMode, checks: list[Any]) -> Any:
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
        )
        @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            response = case.call(base_url=server, headers=headers, timeout=30)
            sent[operation.label] += 1
            statuses[response.status_code] += 1
            try:
                case.validate_response(response, checks=checks, headers=headers)
            except (Exception, BaseExceptionGroup) as exc:  # AssertionError or schemathesis' FailureGroup
                failures.append(f"{operation.label} [{mode.value}] {response.status_code}: {exc}"[:800])

        return run

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                make_runner(operation, mode, base_checks)()
            except hypothesis.errors.Unsatisfiable:
                pass
    total = sum(sent.values())
    by_status = dict(sorted(statuses.items()))
    print(f"\nschemathesis: {total} requests over {len(sent)} operations; statuses {by_status}")
    assert not failures, "\n\n".join(failures[:10])
    assert not [s for s in statuses if s >= 500]
    assert total >= 10 * len(operations)
    assert "Traceback" not in server_process.log(), server_process.log()[-5000:]
