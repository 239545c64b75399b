"""The monitoring store: SQLite by default or PostgreSQL by URL, and the service's log writer.

The schema is in :mod:`healthpredict.monitoring.tables`. The service never writes on the
request path: it hands each request's rows (records served, or records refused by validation)
to a :class:`PredictionLogWriter`, whose thread inserts them in batches.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import Engine, Table, create_engine, event, insert
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


def make_engine(url: str) -> Engine:
    """Engine for ``url``; SQLite gets its folder created and write-ahead logging."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, pool_pre_ping=True)
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
    """Batches prediction rows into the store from a background thread.

    ``submit`` never blocks and never raises: when the queue is full (the database is down or
    too slow) rows are dropped and counted, because a prediction must not wait for its log.
    """

    def __init__(
        self, engine: Engine, flush_seconds: float, flush_rows: int, capacity: int = 50_000
    ):
        """Prepare the writer; call :meth:`start` to begin writing."""
        self.engine = engine
        self.flush_seconds = flush_seconds
        self.flush_rows = flush_rows
        self.stats = WriterStats()
        self._queue: queue.Queue[LogEntry | None] = queue.Queue(maxsize=capacity)
        self._thread: threading.Thread | None = None
        self._schema_ready = False

    def start(self) -> None:
        """Start the writer thread (it creates missing tables before its first write)."""
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def submit(self, entry: LogEntry) -> None:
        """Queue one request's rows for writing (never blocks)."""
        try:
            self._queue.put_nowait(entry)
        except queue.Full:
            with self.stats.lock:
                self.stats.dropped += len(entry)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the thread."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout)
        self._thread = None
        self.engine.dispose()

    def flush_now(self) -> None:
        """Block until everything submitted so far has been written (or has failed)."""
        self._queue.join()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch, stopping = self._collect()
            if batch:
                self._write(batch)
            for _ in range(len(batch) + (1 if stopping else 0)):
                self._queue.task_done()

    def _collect(self) -> tuple[list[LogEntry], bool]:
        """Wait for a first request, then gather more until the batch is full or time is up."""
        batch: list[LogEntry] = []
        rows = 0
        deadline: float | None = None  # block until there is something to write
        while rows < self.flush_rows:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
            rows += len(item)
            deadline = deadline or time.monotonic() + self.flush_seconds
        return batch, False

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
                    connection.execute(insert(table), rows)
        except Exception as error:  # any database failure: count, log, keep serving
            message = mask_url(f"{type(error).__name__}: {error}")[:500]
            logger.error("prediction log write of %d rows failed: %s", n_rows, message)
            with self.stats.lock:
                self.stats.failed += n_rows
                self.stats.last_error = message
            return
        with self.stats.lock:
            self.stats.written += n_rows
