"""Every prediction reaches the monitoring store, batched off the request path, without ids."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, event, select

from healthpredict.data.pseudonym import keyed_hash
from healthpredict.monitoring.store import (
    LoggedRequest,
    PredictionLogWriter,
    make_engine,
    mask_url,
    predictions,
)
from healthpredict.serving.app import create_app
from healthpredict.serving.examples import EXAMPLE_ENCOUNTER, contract_records
from healthpredict.settings import Settings
from tests.serving.conftest import API_KEY, Champion, service_settings, wait_ready
from tests.support.postgres import throwaway_postgres

pytestmark = pytest.mark.integration
PATIENT, ENCOUNTER = 987654321, 123456789


def _rows(url: str) -> list[dict[str, Any]]:
    engine = create_engine(url)
    with engine.connect() as connection:
        rows = [
            dict(r._mapping)
            for r in connection.execute(select(predictions).order_by(predictions.c.id))
        ]
    engine.dispose()
    return rows


def _serve_and_predict(settings: Settings) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    app = create_app(settings)
    with TestClient(app, headers={"X-API-Key": API_KEY}) as client:
        wait_ready(client)
        with_ids = {**EXAMPLE_ENCOUNTER, "patient_nbr": PATIENT, "encounter_id": ENCOUNTER}
        one = client.post("/predict", json=with_ids, headers={"X-Request-ID": "req-one"}).json()
        batch = client.post(
            "/predict/batch",
            json={"encounters": [EXAMPLE_ENCOUNTER, with_ids]},
            headers={"X-Request-ID": "req-batch"},
        ).json()
        app.state.service.writer.flush_now()
        ready = client.get("/ready").json()
    return [one, batch], ready


def test_predictions_are_logged_with_hashed_ids_only(champion: Champion, tmp_path: Path) -> None:
    settings = service_settings(champion.settings, tmp_path)
    (one, batch), ready = _serve_and_predict(settings)
    rows = _rows(settings.monitoring_url)
    assert [(r["request_id"], r["position"]) for r in rows] == [
        ("req-one", 0),
        ("req-batch", 0),
        ("req-batch", 1),
    ]
    first = rows[0]
    assert (
        first["model_version"] == champion.version
        and first["model_name"] == settings.tracking.model_name
    )
    assert first["probability"] == pytest.approx(one["probability"], abs=1e-12)
    assert first["risk_band"] == one["risk_band"] and first["decision"] == one["decision"]
    assert first["features"] == EXAMPLE_ENCOUNTER  # features as received, ids removed
    assert isinstance(first["created_at"], datetime)
    assert settings.data.id_salt is not None
    salt = settings.data.id_salt.get_secret_value().encode()
    assert first["patient_key"] == keyed_hash(pd.Series([PATIENT]), salt).iloc[0]
    assert first["encounter_key"] == keyed_hash(pd.Series([ENCOUNTER]), salt).iloc[0]
    assert rows[1]["patient_key"] is None and rows[2]["patient_key"] == first["patient_key"]
    assert [r["probability"] for r in rows[1:]] == pytest.approx(
        [p["probability"] for p in batch["predictions"]],
        abs=1e-12,
    )
    assert ready["prediction_log"]["written"] == 3
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("monitoring.db*"))
    assert str(PATIENT).encode() not in stored and str(ENCOUNTER).encode() not in stored


def test_writes_are_batched(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'log.db'}")
    statements: list[bool] = []
    event.listen(
        engine,
        "before_cursor_execute",
        lambda *args: statements.append(args[-1]) if "INSERT" in args[2] else None,
    )
    writer = PredictionLogWriter(engine, flush_seconds=0.2, flush_rows=500)
    writer.start()
    for i in range(200):
        writer.submit(_logged(f"r{i}", 1))
    writer.flush_now()
    writer.close()
    assert writer.stats.written == 200
    assert 1 <= len(statements) <= 5  # a few multi-row statements, not 200 inserts


def test_full_queue_drops_and_counts_instead_of_blocking(tmp_path: Path) -> None:
    writer = PredictionLogWriter(
        make_engine(f"sqlite:///{tmp_path / 'log.db'}"), 0.1, 10, capacity=3
    )  # rows
    writer.submit(_logged("a", 3))
    writer.submit(_logged("b", 4))  # not started: the queue is full
    assert writer.stats.dropped == 4


def test_database_down_fails_the_log_not_the_prediction(champion: Champion, tmp_path: Path) -> None:
    url = "postgresql+psycopg://healthpredict:s3cret-pass@127.0.0.1:9/monitoring"
    settings = service_settings(champion.settings, tmp_path, monitoring_db_url=url)
    (one, _batch), ready = _serve_and_predict(settings)
    assert one["probability"] >= 0
    log = ready["prediction_log"]
    assert log["failed"] == 3 and log["written"] == 0
    assert "s3cret-pass" not in log["last_error"] and "OperationalError" in log["last_error"]


def test_mask_url_hides_passwords() -> None:
    text = "cannot reach postgresql+psycopg://user:pa55@db:5432/x and http://a:b@h/"
    assert (
        mask_url(text) == "cannot reach postgresql+psycopg://user:***@db:5432/x and http://a:***@h/"
    )


def test_postgresql_store(champion: Champion, tmp_path: Path) -> None:
    with throwaway_postgres() as url:
        settings = service_settings(champion.settings, tmp_path, monitoring_db_url=url)
        (one, _batch), ready = _serve_and_predict(settings)
        rows = _rows(url)
    assert ready["prediction_log"]["written"] == 3
    assert rows[0]["features"] == EXAMPLE_ENCOUNTER and rows[0]["request_id"] == "req-one"
    assert rows[0]["probability"] == pytest.approx(one["probability"])
    assert rows[0]["created_at"].tzinfo is not None


def _logged(request_id: str, n: int) -> LoggedRequest:
    records, now = contract_records(n, seed=1), datetime.now(UTC)
    return LoggedRequest(
        request_id,
        now,
        "production",
        "m",
        "1",
        records,
        [0.1] * n,
        ["low"] * n,
        [False] * n,
        [None] * n,
        [None] * n,
        [now] * n,
    )
