"""Bad input answers 4xx naming each bad field; never a 500, never a crash."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from healthpredict.serving.examples import EXAMPLE_ENCOUNTER

pytestmark = pytest.mark.integration


def _fields(answer: Any) -> set[str]:
    return {error["field"] for error in answer.json()["errors"]}


def _without(name: str) -> dict[str, Any]:
    return {k: v for k, v in EXAMPLE_ENCOUNTER.items() if k != name}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"age": "[70-80"}, "age"),  # unknown category
        ({"max_glu_serum": None}, "max_glu_serum"),  # required category: 'None' is the category
        ({"time_in_hospital": 15}, "time_in_hospital"),  # out of range
        ({"num_procedures": -1}, "num_procedures"),
        ({"number_inpatient": "2"}, "number_inpatient"),  # wrong type: no string-to-int coercion
        ({"number_inpatient": 2.5}, "number_inpatient"),
        ({"number_inpatient": True}, "number_inpatient"),
        ({"diag_1": "ABC"}, "diag_1"),  # not an ICD-9 code
        ({"payer_code": "?"}, "payer_code"),  # '?' is the file's missing token, not an API value
        ({"payer_code": "TOO-LONG-CODE"}, "payer_code"),
        ({"insulin": "up"}, "insulin"),  # categories are case-sensitive
        ({"patient_nbr": 0}, "patient_nbr"),
        ({"readmitted": "<30"}, "readmitted"),  # the label is not an input
    ],
)
def test_each_bad_field_is_named(client: TestClient, change: dict[str, Any], field: str) -> None:
    answer = client.post("/predict", json={**EXAMPLE_ENCOUNTER, **change})
    assert answer.status_code == 422, answer.text
    assert _fields(answer) == {field}
    assert field in answer.json()["detail"]
    # Only field and message: the submitted values are never echoed back (or logged).
    assert all(set(error) == {"field", "message"} for error in answer.json()["errors"])


def test_missing_fields_are_all_named(client: TestClient) -> None:
    record = _without("age")
    del record["a1c_result"]
    answer = client.post("/predict", json=record)
    assert answer.status_code == 422
    assert _fields(answer) == {"age", "a1c_result"}


def test_nullable_fields_may_be_omitted_or_null(client: TestClient) -> None:
    record = {**_without("weight"), "race": None, "payer_code": None, "diag_3": None}
    assert client.post("/predict", json=record).status_code == 200


def test_batch_errors_name_the_record(client: TestClient) -> None:
    bad = {**EXAMPLE_ENCOUNTER, "gender": "F"}
    answer = client.post("/predict/batch", json={"encounters": [EXAMPLE_ENCOUNTER, bad]})
    assert answer.status_code == 422
    assert _fields(answer) == {"encounters[1].gender"}


def test_empty_and_oversized_batches(client: TestClient) -> None:
    empty = client.post("/predict/batch", json={"encounters": []})
    assert empty.status_code == 422 and _fields(empty) == {"encounters"}
    too_many = client.post("/predict/batch", json={"encounters": [EXAMPLE_ENCOUNTER] * 1001})
    assert too_many.status_code == 422 and _fields(too_many) == {"encounters"}
    assert "1000" in too_many.json()["errors"][0]["message"]


@pytest.mark.parametrize("body", [b"{", b'{"age": }', b"not json", b'{"a": 1,}'])
def test_malformed_json_is_400(client: TestClient, body: bytes) -> None:
    answer = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 400
    assert answer.json()["detail"].startswith("malformed JSON at character")


@pytest.mark.parametrize("body", ["[]", "null", "42", '"text"'])
def test_json_that_is_not_an_object_is_422(client: TestClient, body: str) -> None:
    answer = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 422


def test_missing_body_and_wrong_content_type(client: TestClient) -> None:
    assert client.post("/predict").status_code == 422
    text = client.post("/predict", content="age=1", headers={"content-type": "text/plain"})
    assert text.status_code == 422


def test_body_size_limit_declared_and_streamed(client: TestClient) -> None:
    big = b'{"encounters": [' + b" " * 4_100_000 + b"]}"
    declared = client.post(
        "/predict/batch", content=big, headers={"content-type": "application/json"}
    )
    assert declared.status_code == 413
    assert "larger than 4000000 bytes" in declared.json()["detail"]

    def chunks() -> Any:  # no content-length: the limit must hold on the stream too
        yield b'{"encounters": ['
        for _ in range(50):
            yield b" " * 100_000
        yield b"]}"

    streamed = client.post(
        "/predict/batch", content=chunks(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413


def test_unknown_path_and_method(client: TestClient) -> None:
    assert client.get("/nowhere").status_code == 404
    assert client.get("/predict").status_code == 405
    assert client.post("/predict?explanation=everything", json=EXAMPLE_ENCOUNTER).status_code == 422
