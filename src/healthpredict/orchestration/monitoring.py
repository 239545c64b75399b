"""Task functions of the monitoring DAG: one production batch per run, one loop phase per task.

The DAG runs the simulation loop's step (:mod:`healthpredict.pipelines.simulate`) for one
batch, phase by phase: score -> monitor -> decide -> (retrain -> gate) -> commit. The step's
pending record in the run folder carries the work from task to task, so XCom only carries the
run name, the policy, the batch number and a short summary; each task can be retried on its
own and a committed batch run again changes nothing. The loop runs ``orchestrated``: the gate
records its verdict but moves no alias, the delivery DAG rolls the challenger out and only then
makes it champion, and the next batch adopts it.

Which batch a run handles: the ``batch`` param, or else the run's logical date, the n-th
schedule interval (:data:`BATCH_INTERVAL`) after ``first_batch_date`` being batch n. Batches
run in order: a batch whose predecessor is not committed fails with that message.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from healthpredict.orchestration import policy
from healthpredict.orchestration.tracking import registry_errors
from healthpredict.settings import Settings, get_settings

if TYPE_CHECKING:
    from healthpredict.pipelines.simulate import Simulation
    from healthpredict.pipelines.simulation_pending import PendingStep

# One production batch per week; the DAG's first interval is batch 1 unless a run says otherwise.
BATCH_INTERVAL = timedelta(days=7)
FIRST_BATCH_DATE = policy.START_DATE
RETRAIN_TASK = "retrain"
RUN_SUFFIX = "-airflow"


class BatchError(ValueError):
    """The run names no batch, or a date before the first batch."""


def batch_for(logical_date: datetime, first_batch_date: datetime) -> int:
    """The batch of a logical date: 1 in the first :data:`BATCH_INTERVAL`, n in the n-th."""
    offset = _utc(logical_date) - _utc(first_batch_date)
    if offset < timedelta(0):
        raise BatchError(
            f"logical date {logical_date:%Y-%m-%d %H:%M} is before the first batch "
            f"({first_batch_date:%Y-%m-%d %H:%M})"
        )
    return offset // BATCH_INTERVAL + 1


def locate(params: dict[str, Any], logical_date: datetime | None) -> dict[str, Any]:
    """The run name, policy and batch of a DAG run, from its params and logical date.

    Raises:
        BatchError: No ``batch`` param and no logical date, or a date before the first batch.
    """
    settings = get_settings()
    batch = params.get("batch")
    if not batch:
        if logical_date is None:
            raise BatchError("the run has no logical date: give the batch as the `batch` param")
        first = params.get("first_batch_date") or FIRST_BATCH_DATE.isoformat()
        batch = batch_for(logical_date, datetime.fromisoformat(first))
    policy_name = params.get("policy") or settings.policy
    run = params.get("run_name") or default_run(settings, policy_name)
    return {"run": run, "policy": policy_name, "batch": int(batch)}


def default_run(settings: Settings, policy_name: str) -> str:
    """``<scenario set>-<policy>-airflow``: apart from the runs of ``healthpredict simulate``."""
    from healthpredict.monitoring.scenarios import load_scenarios
    from healthpredict.pipelines.simulate import default_run_name

    scenarios = load_scenarios(settings.scenarios_file)
    return default_run_name(scenarios.name, policy_name, "natural", False) + RUN_SUFFIX


def score(params: dict[str, Any], logical_date: datetime | None) -> dict[str, Any]:
    """Task: score the run's batch with the champion (a committed batch is left as it is)."""
    where = locate(params, logical_date)
    with _simulation(where) as simulation:
        return _described(where, simulation.score_pending(where["batch"]))


def monitor(scored: dict[str, Any]) -> dict[str, Any]:
    """Task: data and prediction drift, the label-free estimate and alarms."""
    with _simulation(scored) as simulation:
        return _described(scored, simulation.monitor_pending(scored["batch"]))


def decide(monitored: dict[str, Any]) -> dict[str, Any]:
    """Task: the labels that arrived with this batch, and the policy's decision."""
    with _simulation(monitored) as simulation:
        return _described(monitored, simulation.decide_pending(monitored["batch"]))


def branch(decided: dict[str, Any]) -> str | None:
    """Task (branch): retrain when the policy says so and the batch is not committed yet;
    None skips retrain and gate."""
    if decided["action"] == "retrain" and decided["phase"] != "committed":
        return RETRAIN_TASK
    return None


def retrain(decided: dict[str, Any]) -> dict[str, Any]:
    """Task: train and register the challenger (or find the one an earlier attempt made)."""
    with _simulation(decided) as simulation:
        return _described(decided, simulation.retrain_pending(decided["batch"]))


def gate(retrained: dict[str, Any]) -> dict[str, Any]:
    """Task: gate the challenger; record the verdict, never move the alias."""
    with _simulation(retrained) as simulation:
        return _described(retrained, simulation.gate_pending(retrained["batch"], promote=False))


def commit(decided: dict[str, Any]) -> dict[str, Any]:
    """Task: write the batch's rows to the monitoring store in one transaction."""
    with _simulation(decided) as simulation:
        return _described(decided, simulation.commit_pending(decided["batch"]))


def delivery_request(committed: dict[str, Any]) -> dict[str, Any] | None:
    """Task (short-circuit): the delivery DAG's conf when the gate passed a challenger."""
    if committed["outcome"] != "passed" or not committed["challenger"]:
        return None
    return {"model_version": committed["challenger"]}


@contextmanager
def _simulation(where: dict[str, Any]) -> Iterator[Simulation]:
    """The run's loop, orchestrated, on the configured monitoring store and registry."""
    from healthpredict.monitoring import store
    from healthpredict.pipelines.simulate import Simulation, build_plan

    settings = get_settings()
    with registry_errors(settings):
        plan = build_plan(settings, where["policy"], where["run"], "natural")
        engine = store.make_engine(settings.monitoring_url)
        try:
            yield Simulation(settings, plan, engine, orchestrated=True)
        finally:
            engine.dispose()


def _described(where: dict[str, Any], pending: PendingStep) -> dict[str, Any]:
    run, batch = where["run"], where["batch"]
    # Names what this batch asks of other DAGs (one delivery per run and batch).
    key = re.sub(r"[^A-Za-z0-9_.~:+-]", "_", run) + f"__batch_{batch:03d}"
    return {"run": run, "policy": where["policy"], "batch": batch, "key": key,
            **pending.summary()}  # fmt: skip


def _utc(moment: datetime) -> datetime:
    """A plain aware datetime (Airflow hands out pendulum's, whose arithmetic differs)."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return datetime.fromtimestamp(aware.timestamp(), tz=UTC)
