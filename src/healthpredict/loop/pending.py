"""A window between its phases: the pending record, kept in the monitoring store.

Monitoring a window runs in phases (monitor, decide, retrain, gate, commit; see
:mod:`healthpredict.loop.runner`). Each phase reads the window's :class:`PendingWindow`, adds
what it found and writes it back, so the phases can run as separate tasks on separate
machines (an orchestrator's workers share the store, not a folder) and each can be retried: a
phase that finds its own result in the record returns it instead of doing the work again.
Only the commit writes the window's results, in one transaction, from the record; the record
stays behind marked committed, so monitoring a committed window again changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
from sqlalchemy import Connection, Engine, delete, insert, select

from healthpredict.monitoring.tables import pending_windows

Phase = Literal["monitored", "decided", "retrained", "gated", "committed"]
PHASES: tuple[Phase, ...] = ("monitored", "decided", "retrained", "gated", "committed")
_DATETIME = "$datetime"


@dataclass
class WindowRows:
    """Everything the commit writes for one window."""

    window: dict[str, Any] | None = None
    versions: list[dict[str, Any]] = field(default_factory=list)
    features: list[dict[str, Any]] = field(default_factory=list)
    performance: list[dict[str, Any]] = field(default_factory=list)
    groups: list[dict[str, Any]] = field(default_factory=list)  # per patient group, measured
    models: list[dict[str, Any]] = field(default_factory=list)
    decision: dict[str, Any] | None = None


@dataclass
class PendingWindow:
    """What one window's phases have found so far.

    Attributes:
        window: The window's number.
        phase: The last phase completed.
        status: "completed", "quarantined" or "empty" (nothing was served in it).
        champion: Version holding the champion role when the window was monitored.
        rows: The store rows the commit writes.
        text: One line of progress, grown by each phase.
        labelled: Window whose labels the policy acted on (None: no newly labelled window).
        action: The policy's decision: "none", "retrain" or "cooldown".
        reasons: Why the policy decided so.
        challenger: Version trained for this window (or found, after a retry).
        outcome: "", "promoted" (the loop moved the alias), "passed" (the gate passed it and
            a delivery moves the alias), "refused" or "failed".
        gate: The gate's whole decision, as plain data.
        error: What went wrong when the outcome is "failed".
        champion_after: Version holding the champion role once the window is committed.
    """

    window: int
    phase: Phase
    status: str
    champion: str
    rows: WindowRows
    text: str = ""
    labelled: int | None = None
    action: str = "none"
    reasons: list[str] = field(default_factory=list)
    challenger: str | None = None
    outcome: str = ""
    gate: dict[str, Any] | None = None
    error: str | None = None
    champion_after: str = ""

    def reached(self, phase: Phase) -> bool:
        """Whether ``phase`` (or a later one) is done."""
        return PHASES.index(self.phase) >= PHASES.index(phase)

    def summary(self) -> dict[str, Any]:
        """Small JSON-safe description (what an orchestrator passes between tasks)."""
        return {
            "window": self.window,
            "phase": self.phase,
            "status": self.status,
            "champion": self.champion,
            "action": self.action,
            "challenger": self.challenger,
            "outcome": self.outcome,
            "champion_after": self.champion_after or self.champion,
            "error": self.error,
            "text": self.text,
        }


def load(connection: Connection | Engine, deployment: str, window: int) -> PendingWindow | None:
    """The window's record, or None when no phase of it has run."""
    query = select(pending_windows.c.record).where(
        pending_windows.c.deployment == deployment, pending_windows.c.window == window
    )
    if isinstance(connection, Engine):
        with connection.connect() as opened:
            found = opened.execute(query).scalar()
    else:
        found = connection.execute(query).scalar()
    if found is None:
        return None
    data = json.loads(json.dumps(found), object_hook=_decode)
    data["rows"] = WindowRows(**data["rows"])
    return PendingWindow(**data)


def save(connection: Connection, deployment: str, pending: PendingWindow) -> None:
    """Write the record (replacing the window's previous one) inside ``connection``'s
    transaction."""
    record = json.loads(json.dumps(jsonable(_plain(pending)), default=_encode))
    key = (pending_windows.c.deployment == deployment) & (
        pending_windows.c.window == pending.window
    )
    connection.execute(delete(pending_windows).where(key))
    row = {
        "deployment": deployment,
        "window": pending.window,
        "phase": pending.phase,
        "record": record,
        "updated_at": datetime.now(UTC),
    }
    connection.execute(insert(pending_windows), [row])


def drop(connection: Connection, deployment: str, window: int) -> None:
    """Forget the window's record (an empty window is monitored again when asked again)."""
    key = (pending_windows.c.deployment == deployment) & (pending_windows.c.window == window)
    connection.execute(delete(pending_windows).where(key))


def _plain(pending: PendingWindow) -> dict[str, Any]:
    data = {f.name: getattr(pending, f.name) for f in fields(pending)}
    data["rows"] = asdict(pending.rows)
    return data


def jsonable(value: Any) -> Any:
    """``value`` with numpy numbers as Python ones and NaN as None (JSON has no NaN, and
    PostgreSQL refuses it in a JSON column)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return {_DATETIME: value.isoformat()}
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot keep {type(value).__name__} in a pending record")


def _decode(value: dict[str, Any]) -> Any:
    if len(value) == 1 and _DATETIME in value:
        return datetime.fromisoformat(value[_DATETIME])
    return value
