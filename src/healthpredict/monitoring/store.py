"""The monitoring store: every served prediction, in SQLite by default or PostgreSQL by URL.

Tables live on one SQLAlchemy ``MetaData`` (:data:`metadata`), so later monitoring results
(drift, performance) are added beside ``predictions`` and created by the same
:func:`create_schema`. The service never writes on the request path: it hands rows to a
:class:`PredictionLogWriter`, whose thread inserts them in batches.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    insert,
)

logger = logging.getLogger(__name__)
metadata = MetaData()

predictions = Table(
    "predictions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(64), nullable=False, index=True),
    Column("position", Integer, nullable=False, doc="row index within the request"),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    Column("model_name", String(200), nullable=False),
    Column("model_version", String(32), nullable=False, index=True),
    Column("probability", Float, nullable=False),
    Column("risk_band", String(32), nullable=False),
    Column("decision", Boolean, nullable=False),
    Column("features", JSON, nullable=False, doc="the contract feature fields as received"),
    Column("patient_key", String(64), nullable=True, index=True, doc="salted hash of patient_nbr"),
    Column("encounter_key", String(64), nullable=True, doc="salted hash of encounter_id"),
)


# --- simulation runs: one row per run, per batch, per monitored feature, per decision ---------
# Every per-batch row is keyed by (run, batch), so re-running a batch replaces its rows in one
# transaction instead of adding to them (see healthpredict.pipelines.simulation_rows).
simulation_runs = Table(
    "simulation_runs",
    metadata,
    Column("run", String(120), primary_key=True),
    Column("policy", String(60), nullable=False),
    Column("policy_config", JSON, nullable=False),
    Column("scenario_set", String(80), nullable=False),
    Column("scenarios", JSON, nullable=False),
    Column("stream", String(20), nullable=False, doc="natural | exchangeable"),
    Column("slot", String(20), nullable=False, doc="registry | folder: where versions live"),
    Column("initial_version", String(32), nullable=False),
    Column("reference_auc", Float, nullable=True),
    Column("fingerprint", String(64), nullable=False, doc="hash of everything that shapes it"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

simulation_batches = Table(
    "simulation_batches",
    metadata,
    Column("run", String(120), primary_key=True),
    Column("batch", Integer, primary_key=True),
    Column("batch_name", String(40), nullable=False),
    Column("status", String(20), nullable=False, doc="completed | quarantined"),
    Column("n_rows", Integer, nullable=False),
    Column("n_set_aside", Integer, nullable=False),
    Column("scenarios", String(400), nullable=False),
    Column("model_version", String(32), nullable=True, doc="version that scored the batch"),
    Column("champion_after", String(32), nullable=False, doc="version serving after this step"),
    Column("quarantine_reason", String(2000), nullable=True),
    Column("drift_share", Float, nullable=True),
    Column("n_drifted", Integer, nullable=True),
    Column("dataset_drift", Boolean, nullable=True),
    Column("prediction_drift", Float, nullable=True),
    Column("prediction_drift_detected", Boolean, nullable=True),
    Column("estimated_auc", Float, nullable=True),
    Column("risk_quantiles", JSON, nullable=True, doc="q05 q25 q50 q75 q95 mean"),
    Column("alarms", JSON, nullable=False, doc="label-free alarms raised on this batch"),
    Column("report_path", String(500), nullable=True),
    Column("monitor_seconds", Float, nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=False),
)

feature_drift = Table(
    "feature_drift",
    metadata,
    Column("run", String(120), primary_key=True),
    Column("batch", Integer, primary_key=True),
    Column("feature", String(80), primary_key=True),
    Column("statistic", Float, nullable=False),
    Column("threshold", Float, nullable=False),
    Column("drifted", Boolean, nullable=False),
    Column("weight", Float, nullable=False),
)

batch_performance = Table(
    "batch_performance",
    metadata,
    Column("run", String(120), primary_key=True),
    Column("batch", Integer, primary_key=True),
    Column("known_at_step", Integer, nullable=False, doc="step at which the labels arrived"),
    Column("model_version", String(32), nullable=False),
    Column("roc_auc", Float, nullable=True),
    Column("roc_auc_low", Float, nullable=True),
    Column("roc_auc_high", Float, nullable=True),
    Column("estimated_auc", Float, nullable=False),
    Column("shortfall_low", Float, nullable=True),
    Column("shortfall_high", Float, nullable=True),
    Column("ece", Float, nullable=False),
    Column("observed_rate", Float, nullable=False),
    Column("predicted_rate", Float, nullable=False),
    Column("calibration_gap_low", Float, nullable=False),
    Column("calibration_gap_high", Float, nullable=False),
    Column("alarms", JSON, nullable=False, doc="label-based alarms about this batch"),
)

simulation_decisions = Table(
    "simulation_decisions",
    metadata,
    Column("run", String(120), primary_key=True),
    Column("step", Integer, primary_key=True),
    Column("labelled_batch", Integer, nullable=True, doc="batch whose labels arrived"),
    Column("action", String(20), nullable=False, doc="none | retrain | cooldown"),
    Column("reasons", JSON, nullable=False),
    Column("outcome", String(20), nullable=False, doc="'' | promoted | passed | refused | failed"),
    Column("champion_version", String(32), nullable=False),
    Column("challenger_version", String(32), nullable=True),
    Column("gate", JSON, nullable=True),
    Column("error", String(2000), nullable=True),
    Column("decided_at", DateTime(timezone=True), nullable=False),
)

simulation_models = Table(
    "simulation_models",
    metadata,
    Column("run", String(120), primary_key=True),
    Column("version", String(32), primary_key=True),
    Column("trained_at_step", Integer, nullable=False, doc="0 = the initial champion"),
    Column("training_rows", Integer, nullable=False),
    Column("training_batches", String(400), nullable=False),
    Column("baseline_estimated_auc", Float, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

scenario_injections = Table(
    "scenario_injections",
    metadata,
    Column("run", String(120), primary_key=True),
    Column("batch", Integer, primary_key=True),
    Column("scenario", String(80), primary_key=True),
    Column("kind", String(40), nullable=False),
    Column("rows_changed", Integer, nullable=False),
    Column("labels_changed", Integer, nullable=False),
    Column("prevalence_before", Float, nullable=False),
    Column("prevalence_after", Float, nullable=False),
    Column("detail", String(1000), nullable=False),
)


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


def create_schema(engine: Engine) -> None:
    """Create every monitoring table that does not exist yet."""
    metadata.create_all(engine)


@dataclass(frozen=True)
class LoggedRequest:
    """One request's predictions, as handed to the writer (rows are built off the hot path)."""

    request_id: str
    created_at: datetime
    model_name: str
    model_version: str
    records: Sequence[dict[str, Any]]
    probabilities: Sequence[float]
    risk_bands: Sequence[str]
    decisions: Sequence[bool]
    patient_keys: Sequence[str | None]
    encounter_keys: Sequence[str | None]

    def rows(self) -> list[dict[str, Any]]:
        """One ``predictions`` row per record."""
        return [
            {
                "request_id": self.request_id,
                "position": i,
                "created_at": self.created_at,
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
        self._queue: queue.Queue[LoggedRequest | None] = queue.Queue(maxsize=capacity)
        self._thread: threading.Thread | None = None
        self._schema_ready = False

    def start(self) -> None:
        """Start the writer thread (it creates missing tables before its first write)."""
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def submit(self, request: LoggedRequest) -> None:
        """Queue one request's rows for writing (never blocks)."""
        try:
            self._queue.put_nowait(request)
        except queue.Full:
            with self.stats.lock:
                self.stats.dropped += len(request.records)

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

    def _collect(self) -> tuple[list[LoggedRequest], bool]:
        """Wait for a first request, then gather more until the batch is full or time is up."""
        batch: list[LoggedRequest] = []
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
            rows += len(item.records)
            deadline = deadline or time.monotonic() + self.flush_seconds
        return batch, False

    def _write(self, batch: list[LoggedRequest]) -> None:
        rows = [row for request in batch for row in request.rows()]
        try:
            if not self._schema_ready:  # here, not at start: a database down at start-up heals
                create_schema(self.engine)
                self._schema_ready = True
            with self.engine.begin() as connection:
                connection.execute(insert(predictions), rows)
        except Exception as error:  # any database failure: count, log, keep serving
            message = mask_url(f"{type(error).__name__}: {error}")[:500]
            logger.error("prediction log write of %d rows failed: %s", len(rows), message)
            with self.stats.lock:
                self.stats.failed += len(rows)
                self.stats.last_error = message
            return
        with self.stats.lock:
            self.stats.written += len(rows)
