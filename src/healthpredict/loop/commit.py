"""The commit phase: everything a window produced, written in one transaction.

The window's earlier rows (from an attempt killed before its commit finished, or a replay
restarted over the same store) are deleted and the new ones inserted together, with the
pending record marked committed in the same transaction: a window is committed once or not at
all. A window with no traffic writes only the realised performance of earlier windows and
forgets its pending record, so that it is monitored again if traffic for it arrives later.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from healthpredict.loop import pending as records
from healthpredict.loop.context import LoopContext
from healthpredict.loop.equity import replace_groups
from healthpredict.loop.pending import PendingWindow
from healthpredict.loop.retrain import model_row
from healthpredict.monitoring.tables import (
    WINDOW_TABLES,
    decisions,
    loop_models,
    loop_runs,
    scenario_injections,
    window_performance,
)


def commit_phase(context: LoopContext, pending: PendingWindow) -> None:
    """Write the window's rows (see the module docstring)."""
    with context.engine.begin() as connection:
        _replace_performance(connection, context.deployment, pending.rows.performance)
        measured = [row["window"] for row in pending.rows.performance]
        replace_groups(connection, context.deployment, measured, pending.rows.groups)
        if pending.status == "empty":
            records.drop(connection, context.deployment, pending.window)
            pending.phase = "committed"
            return
        _replace_window(connection, context, pending)
        _record_models(connection, context, pending)
        _confirm_delivered(connection, context.deployment, pending.champion)
        connection.execute(
            update(loop_runs)
            .where(loop_runs.c.deployment == context.deployment)
            .values(updated_at=datetime.now(UTC))
        )
        pending.phase = "committed"
        records.save(connection, context.deployment, pending)


def _replace_performance(
    connection: Connection, deployment: str, rows: list[dict[str, Any]]
) -> None:
    table = window_performance
    for number in {row["window"] for row in rows}:
        connection.execute(
            delete(table).where(table.c.deployment == deployment, table.c.window == number)
        )
    if rows:
        connection.execute(insert(table), rows)


def _replace_window(connection: Connection, context: LoopContext, pending: PendingWindow) -> None:
    deployment, number = context.deployment, pending.window
    for table in WINDOW_TABLES:
        connection.execute(
            delete(table).where(table.c.deployment == deployment, table.c.window == number)
        )
    rows = pending.rows
    window_row = dict(rows.window or {})
    window_row["champion_after"] = pending.champion_after or pending.champion
    window_row["scenarios"] = ", ".join(_scenarios(connection, deployment, number))
    window_row["finished_at"] = datetime.now(UTC)
    connection.execute(insert(WINDOW_TABLES[0]), [window_row])
    for table, values in ((WINDOW_TABLES[1], rows.versions), (WINDOW_TABLES[2], rows.features)):
        if values:
            connection.execute(insert(table), values)
    connection.execute(insert(decisions), [_decision_row(deployment, pending)])


def _decision_row(deployment: str, pending: PendingWindow) -> dict[str, Any]:
    return {
        "deployment": deployment,
        "window": pending.window,
        "labelled_window": pending.labelled,
        "action": pending.action,
        "reasons": list(pending.reasons),
        "outcome": pending.outcome,
        "champion_version": pending.champion,
        "challenger_version": pending.challenger,
        "gate": pending.gate,
        "error": pending.error,
        "decided_at": datetime.now(UTC),
    }


def _scenarios(connection: Connection, deployment: str, number: int) -> list[str]:
    table = scenario_injections
    query = select(table.c.scenario).where(
        table.c.deployment == deployment, table.c.window == number
    )
    return sorted(connection.execute(query).scalars())


def _record_models(connection: Connection, context: LoopContext, pending: PendingWindow) -> None:
    """The versions this window trained, and the champion if the deployment never saw it
    before (the initial one, or one made champion outside the loop: adopted)."""
    table = loop_models
    known = set(
        connection.execute(
            select(table.c.version).where(table.c.deployment == context.deployment)
        ).scalars()
    )
    rows = list(pending.rows.models)
    if pending.champion not in known and pending.champion not in {r["version"] for r in rows}:
        profile = context.profile(pending.champion)
        origin = "initial" if not known else "adopted: made champion outside this loop"
        rows.append(
            model_row(
                context,
                pending.champion,
                0 if not known else pending.window,
                f"{origin}; {profile.training.describe()}",
                profile.training.rows,
                profile.baseline_auc,
            )
        )
    for row in rows:
        key = (table.c.deployment == context.deployment) & (table.c.version == row["version"])
        connection.execute(delete(table).where(key))
        connection.execute(insert(table), [row])


def _confirm_delivered(connection: Connection, deployment: str, champion: str) -> None:
    """A challenger the gate passed and a delivery has since made champion: "promoted"."""
    connection.execute(
        update(decisions)
        .where(
            decisions.c.deployment == deployment,
            decisions.c.outcome == "passed",
            decisions.c.challenger_version == champion,
        )
        .values(outcome="promoted")
    )
