"""The monitoring store: SQLite by default or PostgreSQL by URL, and the service's log writer.

The schema is in :mod:`healthpredict.monitoring.tables`. The service never writes on the
request path: it hands each request's rows (records served, or records refused by validation)
to a :class:`PredictionLogWriter`, whose thread inserts them in batches.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

from pydantic_core import to_json
from sqlalchemy import (
    JSON,
    Connection,
    Dialect,
    Engine,
    Table,
    TextClause,
    create_engine,
    event,
    insert,
    text,
)
from sqlalchemy.exc import OperationalError

from healthpredict.errors import HealthPredictError
from healthpredict.monitoring.tables import create_schema, predictions, rejected_records

logger = logging.getLogger(__name__)


class StoreUnavailableError(HealthPredictError):
    """The monitoring store cannot be reached or refused the operation; nothing was written."""


@contextmanager
def store_errors(url: str) -> Iterator[None]:
    """Turn a database that cannot be reached into one line naming it (password masked)."""
    try:
        yield
    except OperationalError as error:
        reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        raise StoreUnavailableError(
            f"the monitoring store {mask_url(_without_query(url))} cannot be reached: "
            f"{mask_url(reason)[:300]}"
        ) from error


def _without_query(url: str) -> str:
    return url.split("?", 1)[0]


def mask_url(text: str) -> str:
    """Hide passwords embedded in database or tracking URLs before text reaches a log."""
    return re.sub(r"(://[^/:@\s]+):[^/@\s]*@", r"\1:***@", text)


def make_engine(url: str, **options: Any) -> Engine:
    """Engine for ``url``; SQLite gets its folder created and write-ahead logging.

    Args:
        url: A SQLAlchemy database URL.
        **options: Passed to :func:`sqlalchemy.create_engine`.
    """
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, pool_pre_ping=True, **options)
    if engine.dialect.name == "sqlite":
        # WAL lets monitoring jobs read the log while the service appends to it.
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


@dataclass(frozen=True)
class LoggedRequest:
    """One request's predictions, as handed to the writer (rows are built off the hot path)."""

    request_id: str
    created_at: datetime
    deployment: str
    model_name: str
    model_version: str
    records: Sequence[dict[str, Any]]
    probabilities: Sequence[float]
    risk_bands: Sequence[str]
    decisions: Sequence[bool]
    patient_keys: Sequence[str | None]
    encounter_keys: Sequence[str | None]
    occurred_at: Sequence[datetime]

    table: ClassVar[Table] = predictions

    def __len__(self) -> int:
        return len(self.records)

    def rows(self) -> list[dict[str, Any]]:
        """One ``predictions`` row per record."""
        return [
            {
                "deployment": self.deployment,
                "request_id": self.request_id,
                "position": i,
                "created_at": self.created_at,
                "occurred_at": self.occurred_at[i],
                "model_name": self.model_name,
                "model_version": self.model_version,
                "probability": float(self.probabilities[i]),
                "risk_band": self.risk_bands[i],
                "decision": bool(self.decisions[i]),
                "features": self.records[i],
                "patient_key": self.patient_keys[i],
                "encounter_key": self.encounter_keys[i],
            }
            for i in range(len(self.records))
        ]


@dataclass(frozen=True)
class RejectedRequest:
    """The records of one request that validation refused: where they were and which fields
    broke the contract (never the values: they may be anything, identifiers included)."""

    request_id: str
    created_at: datetime
    deployment: str
    positions: Sequence[int]
    fields: Sequence[Sequence[str]]
    occurred_at: Sequence[datetime]

    table: ClassVar[Table] = rejected_records

    def __len__(self) -> int:
        return len(self.positions)

    def rows(self) -> list[dict[str, Any]]:
        """One ``rejected_records`` row per refused record."""
        return [
            {
                "deployment": self.deployment,
                "request_id": self.request_id,
                "position": position,
                "created_at": self.created_at,
                "occurred_at": occurred,
                "fields": list(fields),
            }
            for position, fields, occurred in zip(
                self.positions, self.fields, self.occurred_at, strict=True
            )
        ]


LogEntry = LoggedRequest | RejectedRequest


@dataclass
class WriterStats:
    """What the writer has done; exposed in ``/ready`` and ``/metrics``."""

    written: int = 0
    dropped: int = 0
    failed: int = 0
    last_error: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class PredictionLogWriter:
    """Batches prediction rows into the store from one background thread.

    :meth:`submit` appends to an in-memory buffer under a lock held for a few instructions: it
    never blocks, never raises and never wakes the thread for one entry (a wake-up per request
    would hand the GIL to the writer on every prediction). The thread wakes every
    ``flush_seconds``, or as soon as ``flush_rows`` rows wait, takes everything buffered and
    inserts it in transactions of at most ``flush_rows`` rows.

    Bounds and failure modes: at most ``capacity`` rows wait; beyond that rows are dropped and
    counted (``stats.dropped``), because a prediction must not wait for its log. A failed
    insert (database down) counts its rows in ``stats.failed`` with the error, is logged, and
    is not retried. :meth:`close` writes everything buffered before it returns. A process
    killed without a clean stop loses the rows not yet committed: those submitted in the last
    ``flush_seconds`` (fewer when ``flush_rows`` rows fill sooner) plus the transaction in
    flight, and never more than ``capacity`` + ``flush_rows`` rows.
    """

    def __init__(
        self, engine: Engine, flush_seconds: float, flush_rows: int, capacity: int = 50_000
    ):
        """Prepare the writer; call :meth:`start` to begin writing."""
        self.engine = engine
        self.flush_seconds = flush_seconds
        self.flush_rows = flush_rows
        self.capacity = capacity
        self.stats = WriterStats()
        self._buffer: list[LogEntry] = []
        self._buffered_rows = 0
        self._accepted = 0  # entries taken into the buffer, ever
        self._settled = 0  # entries written or failed, ever
        self._closed = False
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._progress = threading.Condition()
        self._thread: threading.Thread | None = None
        self._schema_ready = False

    def start(self) -> None:
        """Start the writer thread (it creates missing tables before its first write)."""
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def submit(self, entry: LogEntry) -> None:
        """Buffer one request's rows for writing (never blocks; full or closed: dropped)."""
        rows = len(entry)
        with self._lock:
            accepted = not self._closed and self._buffered_rows + rows <= self.capacity
            if accepted:
                self._buffer.append(entry)
                self._buffered_rows += rows
                self._accepted += 1
                full = self._buffered_rows >= self.flush_rows
        if not accepted:
            with self.stats.lock:
                self.stats.dropped += rows
        elif full:
            self._wake.set()

    def close(self, timeout: float = 10.0) -> None:
        """Write everything buffered, then stop the thread (later submissions are dropped)."""
        if self._thread is None:
            return
        with self._lock:
            self._closed = True
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.error(
                "prediction log: %d row(s) still unwritten after %.0f s at shutdown",
                self._buffered_rows,
                timeout,
            )
        self._thread = None
        self.engine.dispose()

    def flush_now(self, timeout: float | None = None) -> bool:
        """Block until everything submitted so far has been written (or has failed).

        Returns:
            False if ``timeout`` seconds passed first.
        """
        with self._lock:
            target = self._accepted
        self._wake.set()
        with self._progress:
            return self._progress.wait_for(lambda: self._settled >= target, timeout)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            with self._lock:
                batch, self._buffer, self._buffered_rows = self._buffer, [], 0
                stopping = self._closed
            for chunk in self._chunks(batch):
                self._write(chunk)
                with self._progress:
                    self._settled += len(chunk)
                    self._progress.notify_all()
            if stopping:
                return

    def _chunks(self, batch: list[LogEntry]) -> Iterator[list[LogEntry]]:
        """Consecutive entries holding at most ``flush_rows`` rows (one entry may hold more)."""
        chunk: list[LogEntry] = []
        rows = 0
        for entry in batch:
            if chunk and rows + len(entry) > self.flush_rows:
                yield chunk
                chunk, rows = [], 0
            chunk.append(entry)
            rows += len(entry)
        if chunk:
            yield chunk

    def _write(self, batch: list[LogEntry]) -> None:
        by_table: dict[Table, list[dict[str, Any]]] = {}
        for entry in batch:
            by_table.setdefault(entry.table, []).extend(entry.rows())
        n_rows = sum(len(rows) for rows in by_table.values())
        try:
            if not self._schema_ready:  # here, not at start: a database down at start-up heals
                create_schema(self.engine)
                self._schema_ready = True
            with self.engine.begin() as connection:
                for table, rows in by_table.items():
                    insert_rows(connection, table, rows)
        except Exception as error:  # any database failure: count, log, keep serving
            message = mask_url(f"{type(error).__name__}: {error}")[:500]
            logger.error("prediction log write of %d rows failed: %s", n_rows, message)
            with self.stats.lock:
                self.stats.failed += n_rows
                self.stats.last_error = message
            return
        with self.stats.lock:
            self.stats.written += n_rows


def insert_rows(connection: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` (dicts with the same keys) into ``table`` in one statement.

    ``executemany`` binds and steps each row on its own and releases the GIL around every
    step, so each row costs a GIL hand-over with the event loop serving predictions. On
    SQLite (3.38+) and PostgreSQL the rows travel instead as one JSON array (serialised by
    pydantic-core in one call) that the database's JSON functions unpack: one bind, one
    step. Values are first converted by the columns' own bind processors, so the stored
    values are those SQLAlchemy would store. Other databases: plain ``executemany``.
    """
    columns = list(rows[0])
    statement = _json_insert(connection.dialect, table, tuple(columns))
    if statement is None:
        connection.execute(insert(table), rows)
        return
    processors = _processors(connection.dialect, table, tuple(columns))
    if processors:
        for row in rows:
            for name, process in processors:
                row[name] = process(row[name])
    connection.execute(statement, {"rows": to_json(rows).decode()})


@lru_cache(maxsize=32)
def _json_insert(dialect: Dialect, table: Table, columns: tuple[str, ...]) -> TextClause | None:
    quote = dialect.identifier_preparer
    target = quote.format_table(table)
    names = ", ".join(quote.quote(name) for name in columns)
    if dialect.name == "sqlite" and getattr(dialect.dbapi, "sqlite_version_info", (0,)) >= (3, 38):
        # '->' keeps a JSON column's value as JSON text; '->>' gives a scalar its SQL value.
        picks = ", ".join(
            f"value {'->' if isinstance(table.c[name].type, JSON) else '->>'} '$.{name}'"
            for name in columns
        )
        return text(f"INSERT INTO {target} ({names}) SELECT {picks} FROM json_each(:rows)")
    if dialect.name == "postgresql":
        return text(
            f"INSERT INTO {target} ({names}) SELECT {names} "
            f"FROM json_populate_recordset(NULL::{target}, CAST(:rows AS json))"
        )
    return None


@lru_cache(maxsize=32)
def _processors(
    dialect: Dialect, table: Table, columns: tuple[str, ...]
) -> tuple[tuple[str, Callable[[Any], Any]], ...]:
    """Bind processors of the non-JSON columns that have one (SQLite's date-time text)."""
    found = []
    for name in columns:
        kind = table.c[name].type
        process = (
            None if isinstance(kind, JSON) else kind.dialect_impl(dialect).bind_processor(dialect)
        )
        if process is not None:
            found.append((name, process))
    return tuple(found)
