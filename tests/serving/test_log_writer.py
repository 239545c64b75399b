"""The prediction-log writer as a component: bounded, batched, flushed on close, and the
one-statement insert stores exactly what SQLAlchemy's own insert stores (SQLite, PostgreSQL)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, insert, select

from healthpredict.monitoring.store import (
    LoggedRequest,
    PredictionLogWriter,
    RejectedRequest,
    insert_rows,
    make_engine,
)
from healthpredict.monitoring.tables import create_schema, predictions, rejected_records
from healthpredict.serving.examples import contract_records
from tests.support.postgres import throwaway_postgres


def _logged(request_id: str, n: int) -> LoggedRequest:
    now = datetime.now(UTC)
    return LoggedRequest(
        request_id, now, "production", "m", "1", contract_records(n, seed=2), [0.5] * n,
        ["high"] * n, [True] * n, [None] * n, [None] * n, [now] * n,
    )  # fmt: skip


def _inserts(engine: Engine) -> list[str]:
    statements: list[str] = []
    event.listen(
        engine,
        "before_cursor_execute",
        lambda *args: statements.append(args[2]) if "INSERT" in args[2] else None,
    )
    return statements


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return make_engine(f"sqlite:///{tmp_path / 'log.db'}")


def _wait(condition: Any, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_rows_wait_for_the_period_or_a_full_batch(engine: Engine) -> None:
    writer = PredictionLogWriter(engine, flush_seconds=60, flush_rows=50)
    writer.start()
    for i in range(49):
        writer.submit(_logged(f"r{i}", 1))
    time.sleep(0.3)
    assert writer.stats.written == 0  # neither the period nor a full batch yet: no wake-up
    writer.submit(_logged("r49", 1))  # the 50th row fills the batch
    assert _wait(lambda: writer.stats.written == 50)
    writer.close()


def test_the_buffer_is_bounded_and_drops_are_counted(engine: Engine) -> None:
    writer = PredictionLogWriter(engine, flush_seconds=60, flush_rows=100, capacity=10)
    for name in ("a", "b", "c"):
        writer.submit(_logged(name, 4))  # not started: the third no longer fits
    assert writer.stats.dropped == 4
    writer.start()
    writer.close()
    assert writer.stats.written == 8 and writer.stats.failed == 0


def test_close_writes_everything_then_refuses(engine: Engine) -> None:
    writer = PredictionLogWriter(engine, flush_seconds=60, flush_rows=1000)
    writer.start()
    for i in range(30):
        writer.submit(_logged(f"r{i}", 1))
    started = time.monotonic()
    writer.close()
    assert writer.stats.written == 30 and time.monotonic() - started < 10
    writer.submit(_logged("late", 2))
    assert writer.stats.dropped == 2


def test_a_backlog_goes_in_transactions_of_flush_rows(engine: Engine) -> None:
    statements = _inserts(engine)
    writer = PredictionLogWriter(engine, flush_seconds=60, flush_rows=10)
    for i in range(25):
        writer.submit(_logged(f"r{i}", 1))
    writer.submit(_logged("big", 12))  # one request larger than a batch: on its own
    writer.start()
    assert writer.flush_now(timeout=30)
    writer.close()
    assert writer.stats.written == 37
    assert len(statements) == 4  # 10 + 10 + 5 + 12 rows


def test_a_failed_write_is_counted_and_the_writer_goes_on(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    broken = create_engine(f"sqlite:///{tmp_path / 'file' / 'log.db'}")
    writer = PredictionLogWriter(broken, flush_seconds=0.05, flush_rows=100)
    writer.start()
    writer.submit(_logged("a", 3))
    assert writer.flush_now(timeout=30)
    writer.submit(_logged("b", 2))
    assert writer.flush_now(timeout=30)  # still running after the failure
    writer.close()
    assert writer.stats.failed == 5 and writer.stats.written == 0
    assert writer.stats.last_error and "OperationalError" in writer.stats.last_error


def test_flush_now_can_time_out(engine: Engine) -> None:
    writer = PredictionLogWriter(engine, flush_seconds=60, flush_rows=100)
    writer.submit(_logged("a", 1))  # never started
    assert writer.flush_now(timeout=0.1) is False


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    with throwaway_postgres() as url:
        yield url


def test_one_statement_insert_stores_what_sqlalchemy_stores(store_url: str) -> None:
    now = datetime.now(UTC)
    elsewhere = datetime(2024, 3, 5, 10, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    records = contract_records(3, seed=4)
    entries = [
        LoggedRequest(
            "req-1",
            now,
            "production",
            "m",
            "7",
            records,
            [0.1, 0.25471058537996866, 1e-7],
            ["low", "medium", "low"],
            [False, True, False],
            [None, "k" * 64, None],
            [None, None, "e" * 64],
            [now, elsewhere.astimezone(UTC), now],
        ),
        RejectedRequest("req-2", now, "production", [0, 3], [["age"], ["a", "b"]], [now, now]),
    ]
    engine = make_engine(store_url)
    create_schema(engine)
    with engine.begin() as connection:
        for entry in entries:  # SQLAlchemy's executemany, then the one-statement insert
            connection.execute(insert(entry.table), entry.rows())
            insert_rows(connection, entry.table, entry.rows())
    with engine.connect() as connection:
        for table in (predictions, rejected_records):
            stored = [dict(r._mapping) for r in connection.execute(select(table))]
            half = len(stored) // 2
            for ours, theirs in zip(stored[half:], stored[:half], strict=True):
                assert ours.pop("id") != theirs.pop("id")
                assert ours == theirs
    engine.dispose()
