"""
### Health Predict: monitoring

One run per monitoring window of the deployment's own prediction log (what the service served,
with the outcomes that have arrived since): **monitor** the window (quality, data drift against
the serving version's own reference, prediction drift, the label-free estimate, and realised
performance and calibration of earlier windows whose outcomes have come in), let the retraining
policy **decide**, and when it says retrain, **retrain** a challenger on the initial window plus
the labelled production encounters and **gate** it against the champion on held-out labelled
patients neither has seen. Then **commit**: everything the window produced goes to the
monitoring store in one transaction. When the gate passes the challenger, the **delivery** DAG
is triggered: it rolls the challenger out and only then makes it champion; the service follows
the alias and the next window is served by it.

- **Partitioned by the logical date.** The run whose logical date falls in window n (windows of
  `HEALTHPREDICT_MONITOR_WINDOW_DAYS` from `HEALTHPREDICT_MONITOR_ORIGIN`, the schedule's
  length) handles window n, once it has closed. The `window` param overrides it (a manual run).
- **One run at a time**, no catch-up: runs share the loop's state and the challenger alias.
- **Idempotent tasks**: each task reads and extends the window's pending record in the store;
  a retried task finds its own result there, a challenger registered by an earlier attempt is
  reused, and running a committed window again changes nothing.
- **The gate decides, the delivery promotes**: this DAG never moves the `champion` alias.
- Settings (store, MLflow, thresholds, the deployment) come from the worker's `HEALTHPREDICT_*`
  environment; params choose the window, the deployment and the policy.

Wiring only: every task calls one function of `healthpredict.orchestration.monitoring`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, TriggerRule, dag, task

from healthpredict.orchestration import monitoring as steps
from healthpredict.orchestration import policy
from healthpredict.settings import get_settings

DELIVERY_DAG_ID = "healthpredict_delivery"


@dag(
    dag_id="healthpredict_monitoring",
    # Parsing reads the settings, not the store: the schedule is the monitoring window.
    schedule=timedelta(days=get_settings().monitor_window_days),
    start_date=get_settings().monitor_origin,
    catchup=False,
    max_active_runs=1,
    default_args=policy.default_args(),
    tags=[*policy.TAGS, "monitoring"],
    doc_md=__doc__,
    params={
        "window": Param(
            None, type=["null", "integer"], minimum=1, description="Window; empty: from the date."
        ),
        "deployment": Param("", type="string", description="Whose log; empty: the setting."),
        "policy": Param("", type="string", description="Retraining policy; empty: the setting."),
    },
)
def healthpredict_monitoring() -> None:
    """Monitor -> decide -> (retrain -> gate) -> commit -> (deliver)."""

    @task(execution_timeout=timedelta(minutes=20))
    def monitor(params: dict[str, Any] | None = None, logical_date: Any = None) -> dict[str, Any]:
        return steps.monitor(params, logical_date)

    @task(execution_timeout=timedelta(minutes=20))
    def decide(monitored: dict[str, Any]) -> dict[str, Any]:
        return steps.decide(monitored)

    # Retrain, or skip retrain and gate (commit runs either way).
    @task.branch(execution_timeout=timedelta(minutes=5))
    def branch(decided: dict[str, Any]) -> str | None:
        return steps.branch(decided)

    # One retry: training is the expensive step, and a retry reuses a registered challenger.
    @task(retries=1, execution_timeout=timedelta(hours=1))
    def retrain(decided: dict[str, Any]) -> dict[str, Any]:
        return steps.retrain(decided)

    @task(execution_timeout=timedelta(minutes=30))
    def gate(retrained: dict[str, Any]) -> dict[str, Any]:
        return steps.gate(retrained)

    # Runs after the gate, or without it when there is nothing to retrain. Three retries: one
    # transaction that replaces an earlier attempt's rows, and a store that restarts must not
    # cost the window.
    @task(trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS, retries=3,
          execution_timeout=timedelta(minutes=15))  # fmt: skip
    def commit(decided: dict[str, Any]) -> dict[str, Any]:
        return steps.commit(decided)

    @task.short_circuit(execution_timeout=timedelta(minutes=5))
    def delivery_request(committed: dict[str, Any]) -> dict[str, Any] | None:
        return steps.delivery_request(committed)

    decided = decide(monitor())
    retrained = retrain(decided)
    gated = gate(retrained)
    committed = commit(decided)
    branch(decided) >> retrained
    gated >> committed
    request = delivery_request(committed)
    # One delivery per deployment and window, however often this task or the window is re-run.
    trigger = TriggerDagRunOperator(
        task_id="trigger_delivery",
        trigger_dag_id=DELIVERY_DAG_ID,
        trigger_run_id="from_monitoring__{{ ti.xcom_pull(task_ids='commit')['key'] }}",
        conf=request,
        skip_when_already_exists=True,
        execution_timeout=timedelta(minutes=5),
    )
    request >> trigger


healthpredict_monitoring()
