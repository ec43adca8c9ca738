"""The shipped OpenAPI description of the HTTP API, exercised by schemathesis against a real
``sonic serve``: every documented operation, generated inputs, and the answers checked against
the description (no 5xx, only documented status codes, content types and response schemas)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from sonic.launcher import LocalServer

SPEC = Path(str(files("sonic.resources") / "openapi.yaml"))
schema = schemathesis.openapi.from_path(SPEC)
# Not positive/negative data acceptance: whether a schema-valid body is accepted depends on the
# model it names (its inputs, shapes, datatypes), which no HTTP schema can say.
@schemathesis.check
def no_server_fault(ctx: Any, response: Any, case: schemathesis.Case) -> None:
    """schemathesis's not_a_server_error, less the documented 501 (an extension this server
    lacks) and 503 (a model not loaded, shared memory not allowed): those are answers, and
    no model here fails, so a 500 is a fault."""
    if response.status_code >= 500 and response.status_code not in (501, 503):
        raise AssertionError(f"{case.operation.label}: {response.status_code} {response.text}")


CHECKS = [no_server_fault, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_schema_conformance]  # fmt: skip


@pytest.fixture(scope="module")
def api(model_repo: Path) -> Iterator[str]:
    with LocalServer(model_repo, "--model-control-mode=explicit", "--load-model=*") as server:
        yield f"http://{server.http_url}"


def test_the_description_resolves_every_operation() -> None:
    operations = [result.ok() for result in schema.get_all_operations()]  # raises on a bad one
    assert len(operations) >= 25


@schema.parametrize()
@settings(max_examples=int(os.environ.get("SONIC_OPENAPI_EXAMPLES", "25")), deadline=None,
          suppress_health_check=list(HealthCheck))
def test_api_conforms(case: schemathesis.Case, api: str) -> None:
    if case.operation.method.upper() == "POST" and case.path.endswith("/unload"):
        case.path_parameters = {**(case.path_parameters or {}), "model": "not-a-model"}
    case.call_and_validate(base_url=api, checks=CHECKS, excluded_checks=[checks.not_a_server_error])
