"""Monitoring windows: the clock, what a window of the log holds, and the store's upgrade."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import create_engine, insert, inspect, text

from healthpredict.loop.windows import (
    WindowClock,
    WindowError,
    label_coverage,
    labelled,
    read_window,
)
from healthpredict.monitoring.store import LoggedRequest, RejectedRequest, make_engine
from healthpredict.monitoring.tables import create_schema, outcomes
from healthpredict.serving.examples import contract_records

ORIGIN = datetime(2024, 1, 1, tzinfo=UTC)
CLOCK = WindowClock(ORIGIN, timedelta(days=7))


def test_the_clock_numbers_windows_from_the_origin() -> None:
    assert CLOCK.window(1).start == ORIGIN and CLOCK.window(3).start == ORIGIN + 2 * CLOCK.length
    assert CLOCK.containing(ORIGIN + timedelta(days=7, seconds=-1)).number == 1
    assert CLOCK.containing(datetime(2024, 1, 8)).number == 2  # naive: UTC
    assert CLOCK.last_complete(ORIGIN + timedelta(days=20)).number == 2
    moments = pd.Series([ORIGIN, ORIGIN + timedelta(days=7), ORIGIN + timedelta(days=13.9)])
    assert CLOCK.numbers(moments).tolist() == [1, 2, 2]
    assert CLOCK.window(2).name == "w002 (2024-01-08)"
    with pytest.raises(WindowError, match="before the first window"):
        CLOCK.containing(ORIGIN - timedelta(hours=1))
    with pytest.raises(WindowError):
        CLOCK.window(0)


def _served(times: list[datetime], keys: list[str | None], version: str = "1") -> LoggedRequest:
    n, now = len(times), datetime.now(UTC)
    return LoggedRequest(
        "r", now, "d", "m", version, contract_records(n), [0.1 * (i + 1) for i in range(n)],
        ["low"] * n, [False] * n, [None] * n, keys, times,
    )  # fmt: skip


def test_a_window_holds_what_was_served_and_refused_in_it(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 's.db'}")
    create_schema(engine)
    inside, later = ORIGIN + timedelta(days=1), ORIGIN + timedelta(days=8)
    entries = [
        _served([inside, inside, later], ["a", "b", "c"]),
        _served([inside + timedelta(hours=1)], ["a"], version="2"),  # a re-score of "a"
        RejectedRequest("q", inside, "d", [0, 3], [["age"], ["race", "gender"]], [inside] * 2),
        replace(_served([inside], ["z"]), deployment="other"),
    ]
    with engine.begin() as connection:
        for entry in entries:
            connection.execute(insert(entry.table), entry.rows())
        connection.execute(
            insert(outcomes),
            [{"deployment": "d", "encounter_key": key, "readmitted_30d": key == "a",
              "reported_as": "x", "source": "t", "received_at": later} for key in ("a", "c")],
        )  # fmt: skip
    log = read_window(engine, "d", CLOCK.window(1))
    assert len(log.predictions) == 3 and len(log.rejected) == 2  # not "c", not "other"
    assert log.predictions["model_version"].tolist() == ["1", "1", "2"]
    assert str(log.predictions["occurred_at"].dt.tz) == "UTC"
    assert log.rejected["fields"].tolist() == [["age"], ["race", "gender"]]
    known = labelled(engine, "d", ORIGIN, CLOCK.window(1).end)
    assert known["encounter_key"].tolist() == ["a"] and known["model_version"].item() == "2"
    assert known["readmitted_30d"].item() == 1
    # a, b served in window 1 (a known); c in window 2, known; nothing in window 3
    assert label_coverage(engine, "d", CLOCK, 1, 3) == {1: (2, 1), 2: (1, 1)}
    assert read_window(engine, "d", CLOCK.window(5)).empty


def test_a_store_from_before_deployments_is_upgraded_in_place(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = create_engine(url)
    with old.begin() as connection:
        connection.execute(text(
            "CREATE TABLE predictions (id INTEGER PRIMARY KEY, request_id VARCHAR(64) NOT NULL, "
            "position INTEGER NOT NULL, created_at DATETIME NOT NULL, model_name VARCHAR(200) "
            "NOT NULL, model_version VARCHAR(32) NOT NULL, probability FLOAT NOT NULL, risk_band "
            "VARCHAR(32) NOT NULL, decision BOOLEAN NOT NULL, features JSON NOT NULL, "
            "patient_key VARCHAR(64), encounter_key VARCHAR(64))"
        ))  # fmt: skip
        connection.execute(text(
            "INSERT INTO predictions VALUES (1, 'r', 0, '2024-01-02 10:00:00.000000', 'm', '1', "
            "0.2, 'low', 0, '{}', NULL, 'k')"
        ))  # fmt: skip
    engine = make_engine(url)
    create_schema(engine)
    create_schema(engine)  # a second time changes nothing
    with engine.connect() as connection:
        row = connection.execute(text("SELECT deployment, occurred_at FROM predictions")).one()
    assert row.deployment == "production" and str(row.occurred_at).startswith("2024-01-02 10:00")
    indexes = {index["name"] for index in inspect(engine).get_indexes("predictions")}
    assert {"ix_predictions_window", "ix_predictions_encounter"} <= indexes
