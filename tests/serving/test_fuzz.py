"""Schema-driven fuzzing: schemathesis generates requests from the app's own OpenAPI document.

Valid and invalid bodies, headers and query values alike must never produce a 5xx, and
successful answers must match their documented schema. Bounded: a fixed number of examples per
operation, deterministic seed, no shrinking beyond hypothesis' defaults.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from healthpredict.serving.app import create_app
from tests.serving.conftest import API_KEY, Champion, service_settings, wait_ready

pytestmark = pytest.mark.integration


FUZZ_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.fixture(scope="module")
def started_app(champion: Champion, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The started app (model loaded, log writer running), small batches to keep cases cheap."""
    folder = tmp_path_factory.mktemp("fuzz")
    app = create_app(service_settings(champion.settings, folder, max_batch_size=20))
    with TestClient(app) as client:
        wait_ready(client)
        yield app


def _operations(app: object) -> list[object]:
    results = list(schemathesis.openapi.from_asgi("/openapi.json", app).get_all_operations())
    broken = [result for result in results if not hasattr(result, "ok")]
    assert not broken, f"operations schemathesis cannot use: {broken}"
    return [result.ok() for result in results]  # type: ignore[union-attr]


def test_no_server_error_and_documented_answers(started_app: object) -> None:
    """Per operation, hypothesis drives schemathesis' generated cases through the app."""
    operations = _operations(started_app)
    assert len(operations) == 8
    for operation in operations:

        @given(case=operation.as_strategy())  # type: ignore[attr-defined]
        @FUZZ_SETTINGS
        def fuzz(case: schemathesis.Case) -> None:
            case.call_and_validate(
                headers={"X-API-Key": API_KEY},
                checks=[not_a_server_error, response_schema_conformance],
            )

        fuzz()


def test_fuzz_scope_covers_every_operation(tmp_path: Path, champion: Champion) -> None:
    """The fuzzer sees every endpoint (a route missing from OpenAPI would escape it)."""
    app = create_app(service_settings(champion.settings, tmp_path))
    paths = set(app.openapi()["paths"])
    assert paths == {
        "/health",
        "/ready",
        "/predict",
        "/predict/batch",
        "/outcomes",
        "/model",
        "/metrics",
        "/admin/reload",
    }
