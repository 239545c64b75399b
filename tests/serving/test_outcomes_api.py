"""``POST /outcomes``, the discharge time that places a prediction in a window, and the records
the service refuses: what a deployment's monitoring reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select

from healthpredict.data.pseudonym import keyed_hash
from healthpredict.monitoring.tables import predictions, rejected_records
from healthpredict.serving.app import create_app
from healthpredict.serving.examples import EXAMPLE_ENCOUNTER
from tests.serving.conftest import API_KEY, Champion, service_settings, wait_ready

pytestmark = pytest.mark.integration
SALT = b"test-salt-not-secret"


def _rows(url: str, table: Any) -> list[dict[str, Any]]:
    engine = create_engine(url)
    with engine.connect() as connection:
        rows = [dict(r._mapping) for r in connection.execute(select(table))]
    engine.dispose()
    return rows


def test_outcomes_are_recorded_once_and_contradictions_refused(client: TestClient) -> None:
    body = {"outcomes": [{"encounter_id": 41, "readmitted": "<30"},
                         {"encounter_id": 42, "readmitted": False}]}  # fmt: skip
    first = client.post("/outcomes", json=body)
    assert first.status_code == 200, first.text
    assert first.json() == {"received": 2, "recorded": 2, "unchanged": 0, "unmatched": 2}
    again = client.post("/outcomes", json=body)
    assert again.json()["recorded"] == 0 and again.json()["unchanged"] == 2
    contradiction = {"outcomes": [{"encounter_id": 41, "readmitted": "NO"}]}
    refused = client.post("/outcomes", json=contradiction)
    assert refused.status_code == 409
    assert (
        "encounter 41 is already recorded as readmitted within 30 days = true"
        in (refused.json()["detail"])
    )


def test_bad_outcomes_name_the_record_and_field(client: TestClient) -> None:
    answer = client.post(
        "/outcomes",
        json={"outcomes": [{"encounter_id": 1, "readmitted": "NO"},
                           {"encounter_id": -3, "readmitted": "later"}]},
    )  # fmt: skip
    assert answer.status_code == 422
    fields = {error["field"] for error in answer.json()["errors"]}
    assert {"outcomes[1].encounter_id", "outcomes[1].readmitted"} <= fields
    assert client.post("/outcomes", json={"outcomes": []}).status_code == 422
    unauthorised = client.post(
        "/outcomes", json={"outcomes": [{"encounter_id": 1, "readmitted": "NO"}]},
        headers={"X-API-Key": "wrong-key-0123456789"},
    )  # fmt: skip
    assert unauthorised.status_code == 401


def test_a_prediction_is_placed_at_its_discharge_time(champion: Champion, tmp_path: Path) -> None:
    settings = service_settings(champion.settings, tmp_path)
    app = create_app(settings)
    given = {**EXAMPLE_ENCOUNTER, "encounter_id": 77, "discharge_time": "2024-03-05T10:00:00+02:00"}
    with TestClient(app, headers={"X-API-Key": API_KEY}) as client:
        wait_ready(client)
        assert client.post("/predict", json=given).status_code == 200
        assert client.post("/predict", json=EXAMPLE_ENCOUNTER).status_code == 200
        bad = client.post("/predict", json={**given, "discharge_time": "yesterday"})
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "discharge_time"
        app.state.service.writer.flush_now()
    rows = sorted(_rows(settings.monitoring_url, predictions), key=lambda r: r["id"])
    placed = pd.Timestamp(rows[0]["occurred_at"])
    placed = placed.tz_convert(None) if placed.tzinfo else placed  # SQLite keeps UTC, naive
    assert placed == pd.Timestamp("2024-03-05 08:00")
    assert "discharge_time" not in rows[0]["features"]  # never a model input
    assert rows[0]["encounter_key"] == keyed_hash(pd.Series([77]), SALT).iloc[0]
    assert abs(pd.Timestamp(rows[1]["occurred_at"]) - pd.Timestamp(rows[1]["created_at"])) < (
        pd.Timedelta(seconds=1)
    )  # no discharge time: the time it was served


def test_refused_records_are_counted_by_field_without_their_values(
    champion: Champion, tmp_path: Path
) -> None:
    settings = service_settings(champion.settings, tmp_path)
    app = create_app(settings)
    recoded = {**EXAMPLE_ENCOUNTER, "a1c_result": "HIGH", "patient_nbr": 123456789}
    batch = {"encounters": [EXAMPLE_ENCOUNTER, recoded, {**recoded, "age": "[200-210)"}]}
    with TestClient(app, headers={"X-API-Key": API_KEY}) as client:
        wait_ready(client)
        answer = client.post("/predict/batch", json=batch)
        assert answer.status_code == 422
        malformed = client.post(
            "/predict", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert malformed.status_code == 400  # no record in it: nothing to count
        app.state.service.writer.flush_now()
    refused = sorted(_rows(settings.monitoring_url, rejected_records), key=lambda r: r["position"])
    assert [(r["position"], sorted(r["fields"])) for r in refused] == [
        (1, ["a1c_result"]),
        (2, ["a1c_result", "age"]),
    ]
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("monitoring.db*"))
    assert b"HIGH" not in stored and b"123456789" not in stored
    assert _rows(settings.monitoring_url, predictions) == []  # nothing of the batch was served


def test_an_unreachable_store_refuses_outcomes_but_predictions_go_on(
    champion: Champion, tmp_path: Path
) -> None:
    url = "postgresql+psycopg://healthpredict:s3cret-pass@127.0.0.1:9/monitoring"
    settings = service_settings(champion.settings, tmp_path, monitoring_db_url=url)
    with TestClient(create_app(settings), headers={"X-API-Key": API_KEY}) as client:
        wait_ready(client)
        answer = client.post(
            "/outcomes", json={"outcomes": [{"encounter_id": 1, "readmitted": "NO"}]}
        )
        assert answer.status_code == 503 and "cannot be reached" in answer.json()["detail"]
        assert "s3cret-pass" not in answer.text
        assert client.post("/predict", json=EXAMPLE_ENCOUNTER).status_code == 200
