"""``POST /predict`` parses its own request (straight from bytes): it must answer exactly as the
FastAPI-parsed ``/predict/batch`` does, and as its OpenAPI schema says."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from healthpredict.serving.examples import EXAMPLE_ENCOUNTER
from healthpredict.serving.schemas import PredictionResponse

pytestmark = pytest.mark.integration
JSON = {"content-type": "application/json"}


def _fields(answer: Any) -> set[str]:
    return {error["field"] for error in answer.json()["errors"]}


def test_the_answer_is_the_documented_model(client: TestClient) -> None:
    body = client.post("/predict", json=EXAMPLE_ENCOUNTER).json()
    assert PredictionResponse.model_validate(body).model_dump(mode="json") == body


def test_whole_numbers_sent_as_floats_are_integers(client: TestClient) -> None:
    # JSON Schema's integer includes 3.0: the schema and the service agree.
    as_float = {**EXAMPLE_ENCOUNTER, "time_in_hospital": 5.0, "encounter_id": 77.0}
    answer = client.post("/predict", json=as_float)
    assert answer.status_code == 200, answer.text
    expected = client.post("/predict", json=EXAMPLE_ENCOUNTER).json()["probability"]
    assert answer.json()["probability"] == expected
    for bad in (5.5, "5", True):
        refused = client.post("/predict", json={**EXAMPLE_ENCOUNTER, "time_in_hospital": bad})
        assert refused.status_code == 422 and _fields(refused) == {"time_in_hospital"}


@pytest.mark.parametrize("moment", [0, 1700000000, "1700000000", "2024-03-05", "yesterday"])
def test_discharge_time_is_an_iso_date_and_time(client: TestClient, moment: Any) -> None:
    answer = client.post("/predict", json={**EXAMPLE_ENCOUNTER, "discharge_time": moment})
    assert answer.status_code == 422 and _fields(answer) == {"discharge_time"}


@pytest.mark.parametrize(
    "moment", ["2024-03-05T10:00:00+02:00", "2024-03-05 10:00", "2024-03-05T10:00:00Z"]
)
def test_discharge_time_forms_accepted(client: TestClient, moment: str) -> None:
    answer = client.post("/predict", json={**EXAMPLE_ENCOUNTER, "discharge_time": moment})
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize(("value", "status"), [("", 422), (" ? ", 422), ("\t", 422), ("??", 200)])
def test_text_missing_tokens(client: TestClient, value: str, status: int) -> None:
    answer = client.post("/predict", json={**EXAMPLE_ENCOUNTER, "payer_code": value})
    assert answer.status_code == status, answer.text


def test_query_and_body_errors_are_reported_together_as_for_batches(client: TestClient) -> None:
    bad = {**EXAMPLE_ENCOUNTER, "age": "old"}
    one = client.post("/predict?explanation=all", json=bad)
    many = client.post("/predict/batch?explanation=all", json={"encounters": [bad]})
    assert one.status_code == many.status_code == 422
    assert _fields(one) == {"query.explanation", "age"}
    assert _fields(many) == {"query.explanation", "encounters[0].age"}
    only_query = client.post("/predict?explanation=all", json=EXAMPLE_ENCOUNTER)
    assert only_query.status_code == 422 and _fields(only_query) == {"query.explanation"}


def test_bodies_python_reads_but_pydantic_does_not(client: TestClient) -> None:
    not_utf8 = client.post("/predict", content=b'{"age": "\xff"}', headers=JSON)
    assert not_utf8.status_code == 400
    assert not_utf8.json()["detail"].startswith("malformed JSON at character")
    nan = b'{"time_in_hospital": NaN}'  # Python's JSON reads NaN; it is no integer
    answer = client.post("/predict", content=nan, headers=JSON)
    assert answer.status_code == 422 and "time_in_hospital" in _fields(answer)


def test_the_key_is_checked_before_the_body(client: TestClient) -> None:
    client.headers.pop("X-API-Key")
    answer = client.post("/predict", content=b"{", headers=JSON)
    assert answer.status_code == 401


def test_json_suffix_media_types_are_json(client: TestClient) -> None:
    media = {"content-type": "application/vnd.healthpredict+json; charset=utf-8"}
    answer = client.post("/predict", json=EXAMPLE_ENCOUNTER, headers=media)
    assert answer.status_code == 200
