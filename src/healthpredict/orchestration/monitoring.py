"""Task functions of the monitoring DAG: one monitoring window per run, one loop phase per task.

The DAG monitors the deployment's own prediction log, window by window: monitor -> decide ->
(retrain -> gate) -> commit, the phases of :mod:`healthpredict.loop.runner`. The window's
pending record in the monitoring store carries the work from task to task (workers share the
store, not a folder), so XCom only carries the deployment, the policy, the window and a short
summary; each task can be retried on its own and a committed window run again changes
nothing. The loop does not own the champion role here: the gate records its verdict, the
delivery DAG rolls the challenger out and only then makes it champion, and the next window is
served (and monitored) by it.

Which window a run handles: the ``window`` param, or else the window containing the run's
logical date (windows of ``HEALTHPREDICT_MONITOR_WINDOW_DAYS`` from
``HEALTHPREDICT_MONITOR_ORIGIN``; the DAG's schedule is the same length, so each scheduled run
handles the window that has just closed).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from healthpredict.errors import HealthPredictError
from healthpredict.modeling.tracking import registry_errors
from healthpredict.settings import get_settings

if TYPE_CHECKING:
    from healthpredict.loop.context import LoopContext
    from healthpredict.loop.pending import PendingWindow, Phase

RETRAIN_TASK = "retrain"


class WindowParamError(HealthPredictError):
    """The run names no window and has no logical date."""


def locate(params: dict[str, Any], logical_date: datetime | None) -> dict[str, Any]:
    """The deployment, policy and window of a DAG run, from its params and logical date.

    Raises:
        WindowParamError: No ``window`` param and no logical date.
        WindowError: A logical date before the first window.
    """
    from healthpredict.loop.windows import WindowClock

    settings = get_settings()
    number = params.get("window")
    if not number:
        if logical_date is None:
            raise WindowParamError("the run has no logical date: give the `window` param")
        number = (
            WindowClock.from_settings(settings.monitoring).containing(_utc(logical_date)).number
        )
    return {
        "deployment": params.get("deployment") or settings.monitoring.deployment,
        "policy": params.get("policy") or settings.monitoring.policy,
        "window": int(number),
    }


def monitor(params: dict[str, Any] | None, logical_date: datetime | None) -> dict[str, Any]:
    """Task: the window's quality, drift, estimate and realised performance."""
    where = locate(params or {}, logical_date)
    return _phase(where, "monitored")


def decide(monitored: dict[str, Any]) -> dict[str, Any]:
    """Task: the policy's decision on the newly labelled window."""
    return _phase(monitored, "decided")


def branch(decided: dict[str, Any]) -> str | None:
    """Task (branch): retrain when the policy says so and the window is not committed yet;
    None skips retrain and gate."""
    if decided["action"] == "retrain" and decided["phase"] != "committed":
        return RETRAIN_TASK
    return None


def retrain(decided: dict[str, Any]) -> dict[str, Any]:
    """Task: train and register the challenger (or find the one an earlier attempt made)."""
    return _phase(decided, "retrained")


def gate(retrained: dict[str, Any]) -> dict[str, Any]:
    """Task: gate the challenger; record the verdict, never move the alias."""
    return _phase(retrained, "gated")


def commit(decided: dict[str, Any]) -> dict[str, Any]:
    """Task: write the window's rows to the monitoring store in one transaction."""
    return _phase(decided, "committed")


def delivery_request(committed: dict[str, Any]) -> dict[str, Any] | None:
    """Task (short-circuit): the delivery DAG's conf when the gate passed a challenger."""
    if committed["outcome"] != "passed" or not committed["challenger"]:
        return None
    return {"model_version": committed["challenger"]}


def _phase(where: dict[str, Any], phase: Phase) -> dict[str, Any]:
    from healthpredict.loop.runner import run_phase
    from healthpredict.monitoring.store import store_errors

    settings = get_settings()
    with _context(where) as context, store_errors(settings.monitoring_url):
        return _described(where, run_phase(context, where["window"], phase, promote=False))


@contextmanager
def _context(where: dict[str, Any]) -> Iterator[LoopContext]:
    """The deployment's loop, on the configured store and registry; the alias is left alone."""
    from healthpredict.loop.live import live_context

    settings = get_settings()
    with registry_errors(settings):
        context = live_context(settings, where["policy"], where["deployment"], owns_champion=False)
        try:
            yield context
        finally:
            context.engine.dispose()


def _described(where: dict[str, Any], pending: PendingWindow) -> dict[str, Any]:
    deployment, number = where["deployment"], where["window"]
    # Names what this window asks of other DAGs (one delivery per deployment and window).
    key = re.sub(r"[^A-Za-z0-9_.~:+-]", "_", deployment) + f"__window_{number:03d}"
    summary = {"deployment": deployment, "policy": where["policy"], "window": number, "key": key}
    return {**summary, **pending.summary()}


def _utc(moment: datetime) -> datetime:
    """A plain aware datetime (Airflow hands out pendulum's, whose arithmetic differs)."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return datetime.fromtimestamp(aware.timestamp(), tz=UTC)
