"""Every endpoint through TestClient, on a real registered champion."""

from __future__ import annotations

import gc
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from healthpredict.serving.examples import EXAMPLE_ENCOUNTER, contract_records
from tests.serving.conftest import Champion

pytestmark = pytest.mark.integration


def test_health_and_ready(client: TestClient, champion: Champion) -> None:
    assert client.get("/health").json() == {"status": "alive"}
    ready = client.get("/ready").json()
    assert ready["ready"] is True and ready["model_version"] == champion.version
    assert ready["fast_path"] is True


def test_predict_one_encounter(client: TestClient, champion: Champion) -> None:
    answer = client.post("/predict", json=EXAMPLE_ENCOUNTER, headers={"X-Request-ID": "abc-123"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert 0.0 <= body["probability"] <= 1.0
    assert body["risk_band"] in {"low", "medium", "high"}
    assert body["decision"] == (body["probability"] >= body["threshold"])
    assert body["model_version"] == champion.version
    assert body["request_id"] == answer.headers["x-request-id"] == "abc-123"
    assert "log-odds" in body["contribution_scale"]
    reasons = body["top_contributions"]
    assert 0 < len(reasons) <= 5
    sizes = [abs(r["contribution"]) for r in reasons]
    assert sizes == sorted(sizes, reverse=True)
    # Reasons name request fields (one-hot columns folded back), with the value sent.
    for reason in reasons:
        if reason["feature"] in EXAMPLE_ENCOUNTER:
            assert reason["value"] == EXAMPLE_ENCOUNTER[reason["feature"]]
        assert "_infrequent" not in reason["feature"] and "race_" not in reason["feature"]


def test_batch_keeps_request_order(client: TestClient) -> None:
    records = contract_records(50, seed=3)
    batch = client.post("/predict/batch", json={"encounters": records}).json()
    assert len(batch["predictions"]) == 50
    singles = [client.post("/predict", json=r).json()["probability"] for r in records[:5]]
    assert [p["probability"] for p in batch["predictions"][:5]] == pytest.approx(singles, abs=1e-12)


def test_model_describes_the_version_served(client: TestClient, champion: Champion) -> None:
    body = client.get("/model").json()
    assert body["loaded"] is True
    assert (
        body["name"] == champion.settings.tracking.model_name
        and body["version"] == champion.version
    )
    assert body["alias"] == "champion"
    assert body["training_window"].startswith("sequence 0-")
    assert len(body["data_hash"]) >= 16
    assert "roc_auc" in body["metrics"]
    assert body["fast_path"].startswith("fast path on")
    assert body["registry"]["last_error"] is None


def test_metrics_count_requests_bands_and_version(client: TestClient, champion: Champion) -> None:
    client.post("/predict", json=EXAMPLE_ENCOUNTER)
    client.post("/predict", json={"age": "nope"})
    text = client.get("/metrics").text
    assert (
        'healthpredict_requests_total{endpoint="/predict",method="POST",status="200"} 1.0' in text
    )
    assert (
        'healthpredict_requests_total{endpoint="/predict",method="POST",status="422"} 1.0' in text
    )
    assert (
        'healthpredict_request_seconds_bucket{endpoint="/predict",le="0.005",status="200"}' in text
    )
    assert "healthpredict_predictions_total{risk_band=" in text
    name = champion.settings.tracking.model_name
    assert (
        f'healthpredict_model_version_info{{name="{name}",version="{champion.version}"}} 1.0'
        in text
    )
    assert "healthpredict_prediction_log_rows_total" in text


def test_openapi_has_contract_enums_ranges_and_examples(client: TestClient) -> None:
    schema: dict[str, Any] = client.get("/openapi.json").json()
    encounter = schema["components"]["schemas"]["Encounter"]
    properties = encounter["properties"]
    assert set(properties["max_glu_serum"]["enum"]) == {"None", "Norm", ">200", ">300"}
    assert properties["time_in_hospital"]["minimum"] == 1
    assert properties["time_in_hospital"]["maximum"] == 14
    assert "a1c_result" in encounter["required"] and "weight" not in encounter["required"]
    # FastAPI drops nulls from the published examples; null fields may be omitted anyway.
    assert encounter["examples"][0] == {k: v for k, v in EXAMPLE_ENCOUNTER.items() if v is not None}
    assert (
        schema["components"]["schemas"]["EncounterBatch"]["properties"]["encounters"]["maxItems"]
        == 1000
    )
    schemes = schema["components"]["securitySchemes"]
    assert {name: scheme["name"] for name, scheme in schemes.items()} == {
        "ApiKey": "X-API-Key",
        "AdminKey": "X-Admin-Key",
    }
    # One key per operation, the right one; the open endpoints ask for none.
    security = {
        (method, path): operation.get("security")
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
    }
    assert security == {
        ("post", "/predict"): [{"ApiKey": []}],
        ("post", "/predict/batch"): [{"ApiKey": []}],
        ("post", "/outcomes"): [{"ApiKey": []}],
        ("get", "/model"): [{"ApiKey": []}],
        ("post", "/admin/reload"): [{"AdminKey": []}],
        ("get", "/health"): None,
        ("get", "/ready"): None,
        ("get", "/metrics"): None,
    }
    assert set(schema["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
    # /predict parses its own request: documented exactly as FastAPI documents /predict/batch.
    predict = schema["paths"]["/predict"]["post"]
    batch = schema["paths"]["/predict/batch"]["post"]
    assert predict["parameters"] == batch["parameters"]
    errors = {code for code in batch["responses"] if code != "200"}
    assert {c: predict["responses"][c] for c in errors} == {
        c: batch["responses"][c] for c in errors
    }
    assert predict["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Encounter"
    }
    assert client.get("/docs").status_code == 200


def test_the_heap_is_frozen_once_a_model_is_loaded(client: TestClient) -> None:
    # A full garbage collection of the loaded heap would stall every request for ~150 ms.
    deadline = time.monotonic() + 30
    while gc.get_freeze_count() == 0:
        assert time.monotonic() < deadline, "the heap was never frozen after the model load"
        time.sleep(0.05)
    assert gc.get_freeze_count() > 10_000
