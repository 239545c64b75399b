"""The loop over one window, phase by phase: monitor -> decide -> (retrain -> gate) -> commit.

:func:`run_window` runs them all (``healthpredict monitor``, a replay); the monitoring DAG runs
one per task through :func:`run_phase`. Each phase reads the window's pending record from the
store, does its part unless the record shows it done, and writes the record back, so any phase
can be retried on its own, by another process, and a committed window monitored again changes
nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine

from healthpredict.loop import pending as records
from healthpredict.loop.commit import commit_phase
from healthpredict.loop.context import LoopContext, LoopError, ensure_deployment
from healthpredict.loop.decide import decide_phase
from healthpredict.loop.monitor import monitor
from healthpredict.loop.pending import PHASES, PendingWindow, Phase
from healthpredict.loop.retrain import gate_phase, retrain_phase


def run_window(context: LoopContext, number: int, promote: bool | None = None) -> PendingWindow:
    """Monitor window ``number`` and act on it, to the commit.

    Args:
        context: The loop's context.
        number: The window.
        promote: Move the champion alias when the gate passes a challenger; default: when the
            context owns the champion role (otherwise a delivery moves it).
    """
    for phase in PHASES:
        pending = run_phase(context, number, phase, promote)
    return pending


def run_phase(
    context: LoopContext, number: int, phase: Phase, promote: bool | None = None
) -> PendingWindow:
    """Run one phase of window ``number`` unless it ran already; return the record.

    Raises:
        LoopError: An earlier phase has not run yet.
    """
    if phase == "monitored":
        return _monitored(context, number)
    moves = context.owns_champion if promote is None else promote
    work: dict[Phase, Callable[[LoopContext, PendingWindow], None]] = {
        "decided": decide_phase,
        "retrained": retrain_phase,
        "gated": lambda ctx, pending: gate_phase(ctx, pending, moves),
        "committed": commit_phase,
    }
    return _advance(context, number, phase, work[phase])


def _monitored(context: LoopContext, number: int) -> PendingWindow:
    found = records.load(context.engine, context.deployment, number)
    if found is not None:
        return found
    ensure_deployment(context)
    pending = monitor(context, context.clock.window(number), context.slot.champion_version())
    _save(context.engine, context.deployment, pending)
    return pending


def _advance(
    context: LoopContext,
    number: int,
    phase: Phase,
    work: Callable[[LoopContext, PendingWindow], None],
) -> PendingWindow:
    pending = records.load(context.engine, context.deployment, number)
    if pending is None:
        raise LoopError(f"window {number} has not been monitored: run its monitor phase first")
    if pending.reached(phase):
        return pending
    previous = PHASES[PHASES.index(phase) - 1]
    if pending.action != "retrain" and previous in ("retrained", "gated"):
        previous = "decided"  # nothing to retrain or gate: those phases may be skipped
    if not pending.reached(previous):
        raise LoopError(f"window {number} is {pending.phase}, not yet {previous}")
    work(context, pending)
    if phase != "committed":  # the commit saves its record inside its own transaction
        pending.phase = phase
        _save(context.engine, context.deployment, pending)
    return pending


def _save(engine: Engine, deployment: str, pending: PendingWindow) -> None:
    with engine.begin() as connection:
        records.save(connection, deployment, pending)
