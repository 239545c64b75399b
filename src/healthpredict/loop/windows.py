"""Monitoring windows over a deployment's prediction log, and what the log holds for one.

Windows follow each other from an origin, each the same length of *encounter time*: the time
the encounter happened (a request's ``discharge_time``), else the time it was served. A replay
with a simulated clock and live traffic therefore fall into windows the same way. A window is
read from the store as logged: the features as the service received them, the probability and
the model version that answered, the hashed keys; outcomes are joined by encounter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from sqlalchemy import ColumnElement, Engine, Table, and_, case, func, select

from healthpredict.data.prepare import TARGET
from healthpredict.data.pseudonym import ENCOUNTER_KEY, PATIENT_KEY
from healthpredict.data.schema import FEATURE_COLUMNS
from healthpredict.errors import HealthPredictError
from healthpredict.monitoring.tables import outcomes, predictions, rejected_records
from healthpredict.settings import MonitoringSettings

PROBABILITY = "probability"
MODEL_VERSION = "model_version"
OCCURRED_AT = "occurred_at"
# What a window's reader takes from each logged prediction, in this order.
_LOGGED = (
    predictions.c.features,
    predictions.c.probability,
    predictions.c.model_version,
    predictions.c.patient_key,
    predictions.c.encounter_key,
    predictions.c.occurred_at,
)


class WindowError(HealthPredictError, ValueError):
    """No such window: before the first one, or numbered below 1."""


@dataclass(frozen=True)
class Window:
    """One monitoring window: ``[start, end)`` of encounter time, numbered from 1."""

    number: int
    start: datetime
    end: datetime

    @property
    def name(self) -> str:
        """Sortable label, e.g. ``w003 (2024-01-15)``."""
        return f"w{self.number:03d} ({self.start:%Y-%m-%d})"


@dataclass(frozen=True)
class WindowClock:
    """Where window 1 starts and how long every window is."""

    origin: datetime
    length: timedelta

    @classmethod
    def from_settings(cls, monitoring: MonitoringSettings) -> WindowClock:
        """The clock the monitoring settings describe."""
        return cls(monitoring.monitor_origin, timedelta(days=monitoring.monitor_window_days))

    def window(self, number: int) -> Window:
        """Window ``number`` (1-based).

        Raises:
            WindowError: ``number`` is below 1.
        """
        if number < 1:
            raise WindowError(f"windows are numbered from 1, not {number}")
        start = self.origin + (number - 1) * self.length
        return Window(number, start, start + self.length)

    def containing(self, moment: datetime) -> Window:
        """The window ``moment`` falls in.

        Raises:
            WindowError: ``moment`` is before the origin.
        """
        aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        if aware < self.origin:
            raise WindowError(
                f"{aware.isoformat()} is before the first window ({self.origin.isoformat()}): "
                "set HEALTHPREDICT_MONITOR_ORIGIN earlier"
            )
        return self.window(int((aware - self.origin) / self.length) + 1)

    def numbers(self, moments: pd.Series) -> pd.Series:
        """The window number of each (UTC) time in ``moments``."""
        offsets = (pd.to_datetime(moments, utc=True) - self.origin) / self.length
        return (offsets.astype("float64") // 1).astype("int64") + 1

    def last_complete(self, now: datetime | None = None) -> Window:
        """The newest window that has ended by ``now``."""
        current = self.containing(now or datetime.now(UTC))
        return self.window(max(current.number - 1, 1))


@dataclass(frozen=True)
class WindowLog:
    """What the store holds for one window of one deployment."""

    window: Window
    predictions: pd.DataFrame
    rejected: pd.DataFrame

    @property
    def empty(self) -> bool:
        """Nothing was served or refused in the window."""
        return self.predictions.empty and self.rejected.empty


def read_window(engine: Engine, deployment: str, window: Window) -> WindowLog:
    """The predictions and refused records of ``window``, oldest first.

    ``predictions`` has the contract's feature columns plus ``probability``,
    ``model_version``, ``patient_key``, ``encounter_key`` and ``occurred_at``.
    """
    log = predictions
    query = (
        select(*_LOGGED)
        .where(_in_window(log, deployment, window))
        .order_by(log.c.occurred_at, log.c.id)
    )
    refused = rejected_records
    rejected_query = select(refused.c.position, refused.c.fields, refused.c.occurred_at).where(
        _in_window(refused, deployment, window)
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
        rejected = pd.DataFrame(
            connection.execute(rejected_query).all(), columns=["position", "fields", OCCURRED_AT]
        )
    return WindowLog(window, _prediction_frame(rows), rejected)


def _in_window(table: Table, deployment: str, window: Window) -> ColumnElement[bool]:
    columns = table.c
    return and_(
        columns.deployment == deployment,
        columns.occurred_at >= window.start,
        columns.occurred_at < window.end,
    )


def _prediction_frame(rows: Sequence[Sequence[Any]]) -> pd.DataFrame:
    features = pd.DataFrame.from_records([row[0] for row in rows], columns=list(FEATURE_COLUMNS))
    extra = pd.DataFrame(
        [row[1:] for row in rows],
        columns=[PROBABILITY, MODEL_VERSION, PATIENT_KEY, ENCOUNTER_KEY, OCCURRED_AT],
    )
    # SQLite hands back naive times (written as UTC), PostgreSQL aware ones: UTC for both.
    extra[OCCURRED_AT] = pd.to_datetime(extra[OCCURRED_AT], utc=True)
    return pd.concat([features, extra], axis=1)


def records_of(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The contract feature fields of ``frame`` as the service receives them (missing: None)."""
    features = frame.loc[:, list(FEATURE_COLUMNS)]
    return features.astype(object).where(features.notna(), None).to_dict("records")  # type: ignore[return-value]


def labelled(
    engine: Engine, deployment: str, start: datetime, end: datetime, features: bool = True
) -> pd.DataFrame:
    """Predictions of ``[start, end)`` whose outcome has arrived, one per encounter.

    An encounter scored more than once counts once, with its latest prediction (a re-score
    replaces the earlier answer). Columns: those of :func:`read_window` plus the target; the
    contract's feature columns only with ``features`` (reading them is most of the cost).
    """
    log = predictions
    logged = _LOGGED if features else _LOGGED[1:]
    query = (
        select(*logged, outcomes.c.readmitted_30d)
        .join(
            outcomes,
            and_(
                outcomes.c.deployment == log.c.deployment,
                outcomes.c.encounter_key == log.c.encounter_key,
            ),
        )
        .where(log.c.deployment == deployment, log.c.occurred_at >= start, log.c.occurred_at < end)
        .order_by(log.c.occurred_at, log.c.id)
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    frame = _prediction_frame([(row[:-1] if features else ({}, *row[:-1])) for row in rows])
    if not features:
        frame = frame.drop(columns=list(FEATURE_COLUMNS))
    frame[TARGET] = [int(bool(row[-1])) for row in rows]
    return frame.drop_duplicates(ENCOUNTER_KEY, keep="last").reset_index(drop=True)


def label_coverage(
    engine: Engine, deployment: str, clock: WindowClock, first: int, last: int
) -> dict[int, tuple[int, int]]:
    """Per window from ``first`` to ``last``: how many encounters were served, and how many of
    them have an outcome (windows with nothing served are left out).

    One query for the whole range: each row is placed in its window by exact comparisons with
    the window bounds, so no arithmetic on times can move it across a boundary.
    """
    log = predictions
    bounds = [clock.window(number) for number in range(first, last + 1)]
    window = case(*[(log.c.occurred_at < b.end, b.number) for b in bounds]).label("window")
    query = (
        select(
            window,
            func.count(func.distinct(log.c.encounter_key)),
            func.count(func.distinct(outcomes.c.encounter_key)),
        )
        .select_from(log)
        .outerjoin(
            outcomes,
            and_(
                outcomes.c.deployment == log.c.deployment,
                outcomes.c.encounter_key == log.c.encounter_key,
            ),
        )
        .where(
            log.c.deployment == deployment,
            log.c.encounter_key.is_not(None),
            log.c.occurred_at >= bounds[0].start,
            log.c.occurred_at < bounds[-1].end,
        )
        .group_by(window)
    )
    with engine.connect() as connection:
        return {int(n): (int(served), int(known)) for n, served, known in connection.execute(query)}
