"""The fields' history in the monitoring store: the previous window's states, acknowledgements.

``healthpredict drift acknowledge FIELD`` records that a person knows a field's new state and
why (:func:`acknowledge`); the next windows show the field as acknowledged instead of settled,
until it moves again or a promotion re-bases the reference.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine, RowMapping, func, insert, select
from sqlalchemy.exc import IntegrityError

from healthpredict.data.schema import FEATURE_COLUMNS
from healthpredict.errors import HealthPredictError
from healthpredict.monitoring.field_state import (
    OFF_REFERENCE,
    Acknowledgement,
    FieldStatus,
    PreviousField,
)
from healthpredict.monitoring.tables import drift_acknowledgements, feature_drift

MAX_REASON = 1000


class AcknowledgeError(HealthPredictError):
    """A field's state cannot be acknowledged as asked (nothing was recorded)."""


def previous_fields(
    engine: Engine, deployment: str, window: int, version: str
) -> dict[str, PreviousField]:
    """The fields as recorded in the newest window before ``window`` that ``version`` served."""
    table = feature_drift
    mine = (table.c.deployment == deployment) & (table.c.model_version == version)
    newest = select(func.max(table.c.window)).where(mine, table.c.window < window)
    query = select(
        table.c.window, table.c.feature, table.c.status, table.c.since_window, table.c.counts
    ).where(mine, table.c.window == newest.scalar_subquery())
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return {
        feature: PreviousField(
            number,
            FieldStatus(status or FieldStatus.STEADY.value),
            since,
            {str(k): int(v) for k, v in (counts or {}).items()},
        )
        for number, feature, status, since, counts in rows
    }


def acknowledgements(engine: Engine, deployment: str, version: str) -> dict[str, Acknowledgement]:
    """The newest acknowledgement of each field's state under ``version``."""
    table = drift_acknowledgements
    query = (
        select(table)
        .where(table.c.deployment == deployment, table.c.model_version == version)
        .order_by(table.c.acknowledged_at)
    )
    with engine.connect() as connection:
        rows = connection.execute(query).mappings().all()
    return {row["feature"]: _acknowledgement(row) for row in rows}


def acknowledge(
    engine: Engine, deployment: str, feature: str, by: str, reason: str
) -> tuple[Acknowledgement, int]:
    """Record that ``by`` knows why ``feature`` is off the reference; returns it and the window.

    Raises:
        AcknowledgeError: Not a contract field, no reason given, the field is not off the
            reference in the newest monitored window, or its move is already acknowledged.
    """
    if feature not in FEATURE_COLUMNS:
        raise AcknowledgeError(
            f"{feature!r} is not a contract field; fields: {', '.join(FEATURE_COLUMNS)}"
        )
    reason, by = reason.strip(), by.strip()
    if not reason or len(reason) > MAX_REASON:
        raise AcknowledgeError(f"say why in 1-{MAX_REASON} characters (--reason)")
    if not by:
        raise AcknowledgeError("say who acknowledges (--by)")
    window, version, status, since = _newest_state(engine, deployment, feature)
    if FieldStatus(status) not in OFF_REFERENCE or since is None:
        raise AcknowledgeError(
            f"{feature} is {status} in w{window:03d} (v{version}): nothing to acknowledge"
        )
    now = datetime.now(UTC)
    row = {
        "deployment": deployment,
        "feature": feature,
        "model_version": version,
        "since_window": since,
        "acknowledged_by": by,
        "reason": reason,
        "acknowledged_at": now,
        "window": window,
    }
    try:
        with engine.begin() as connection:
            connection.execute(insert(drift_acknowledgements).values(**row))
    except IntegrityError as error:
        raise AcknowledgeError(
            f"the move of {feature} in w{since:03d} (v{version}) is already acknowledged"
        ) from error
    return Acknowledgement(feature, version, since, by, reason, now), window


def _newest_state(
    engine: Engine, deployment: str, feature: str
) -> tuple[int, str, str, int | None]:
    """The field's row in the newest monitored window (the version that served most of it)."""
    table = feature_drift
    query = (
        select(table.c.window, table.c.model_version, table.c.status, table.c.since_window)
        .where(table.c.deployment == deployment, table.c.feature == feature)
        .order_by(table.c.window.desc(), table.c.drifted.desc())
        .limit(1)
    )
    with engine.connect() as connection:
        row = connection.execute(query).first()
    if row is None:
        raise AcknowledgeError(f"deployment {deployment!r} has no monitored window yet")
    window, version, status, since = row
    return int(window), str(version), str(status or FieldStatus.STEADY.value), since


def _acknowledgement(row: RowMapping) -> Acknowledgement:
    at = row["acknowledged_at"]
    return Acknowledgement(
        feature=row["feature"],
        model_version=row["model_version"],
        since_window=int(row["since_window"]),
        by=row["acknowledged_by"],
        reason=row["reason"],
        at=at if at.tzinfo else at.replace(tzinfo=UTC),
    )
