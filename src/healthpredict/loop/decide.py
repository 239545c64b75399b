"""The decide phase: which window's outcomes the policy acts on, and what it decides.

The newest window whose outcomes have reached ``min_labelled_share`` and that no decision has
acted on yet is the labelled window; its label-free alarms (raised when it was monitored) and
its label alarms go to the policy, with the windows since the last promotion (the cooldown).
A window nothing was served in decides nothing: its newly labelled window waits for the next.
"""

from __future__ import annotations

from sqlalchemy import select

from healthpredict.loop.context import LoopContext
from healthpredict.loop.monitor import window_status
from healthpredict.loop.pending import PendingWindow
from healthpredict.monitoring.policy import decide
from healthpredict.monitoring.tables import decisions, window_performance, windows


def decide_phase(context: LoopContext, pending: PendingWindow) -> None:
    """The policy's decision on the newly labelled window (none for a window with no traffic)."""
    if pending.status == "empty":
        return
    labelled_window = newly_labelled(context, pending)
    alarms: list[str] = []
    if labelled_window is not None:
        alarms = _alarms_of(context, pending, labelled_window)
    last = _last_promotion(context, pending.window)
    since = None if last is None else pending.window - last
    decision = decide(context.policy, labelled_window, alarms, since)
    pending.labelled = labelled_window
    pending.action, pending.reasons = decision.action, list(decision.reasons)
    if decision.action == "cooldown":
        pending.text += "; alarm during cooldown: no retrain"


def newly_labelled(context: LoopContext, pending: PendingWindow) -> int | None:
    """The newest completed window labelled enough and newer than any acted on before."""
    shares: dict[int, float] = {}
    with context.engine.connect() as connection:
        for number, share in connection.execute(
            select(window_performance.c.window, window_performance.c.labelled_share).where(
                window_performance.c.deployment == context.deployment
            )
        ):
            shares[number] = shares.get(number, 0.0) + float(share)
        acted = connection.execute(
            select(decisions.c.labelled_window).where(
                decisions.c.deployment == context.deployment,
                decisions.c.labelled_window.is_not(None),
                decisions.c.window < pending.window,
            )
        ).scalars()
        last_acted = max(acted, default=0)
    for row in pending.rows.performance:  # measured just now: replaces what is stored
        shares[row["window"]] = 0.0
    for row in pending.rows.performance:
        shares[row["window"]] += float(row["labelled_share"])
    ready = [
        number
        for number, share in shares.items()
        if number > last_acted
        and number <= pending.window
        and share >= context.settings.monitoring.min_labelled_share
        and _completed(context, pending, number)
    ]
    return max(ready, default=None)


def _completed(context: LoopContext, pending: PendingWindow, number: int) -> bool:
    if number == pending.window:
        return pending.status == "completed"
    return window_status(context, number) == "completed"


def _alarms_of(context: LoopContext, pending: PendingWindow, number: int) -> list[str]:
    """Label-free alarms raised when window ``number`` was monitored, plus its label alarms
    (measured by this window's run, or stored by an earlier one)."""
    key = (windows.c.deployment == context.deployment) & (windows.c.window == number)
    stored = window_performance
    stored_key = (stored.c.deployment == context.deployment) & (stored.c.window == number)
    with context.engine.connect() as connection:
        if number == pending.window and pending.rows.window is not None:
            free = list(pending.rows.window["alarms"])
        else:
            free = list(connection.execute(select(windows.c.alarms).where(key)).scalar() or [])
        measured = [row for row in pending.rows.performance if row["window"] == number]
        if measured:
            late = [alarm for row in measured for alarm in row["alarms"]]
        else:
            rows = connection.execute(select(stored.c.alarms).where(stored_key)).scalars()
            late = [alarm for alarms in rows for alarm in alarms]
    return free + late


def _last_promotion(context: LoopContext, before: int) -> int | None:
    query = select(decisions.c.window).where(
        decisions.c.deployment == context.deployment,
        decisions.c.outcome == "promoted",
        decisions.c.window < before,
    )
    with context.engine.connect() as connection:
        return max(connection.execute(query).scalars(), default=None)
