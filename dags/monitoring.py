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

Wiring only: every task is one function of `healthpredict.orchestration.monitoring`.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, TriggerRule, dag, task

from healthpredict.orchestration import monitoring as steps
from healthpredict.orchestration import wiring
from healthpredict.settings import get_settings

PARAMS = {
    "window": Param(
        None, type=["null", "integer"], minimum=1, description="Window; empty: from the date."
    ),
    "deployment": Param("", type="string", description="Whose log; empty: the setting."),
    "policy": Param("", type="string", description="Retraining policy; empty: the setting."),
}


@dag(
    **wiring.dag_arguments(
        "healthpredict_monitoring",
        __doc__,
        "monitoring",
        # Parsing reads the settings, not the store: the schedule is the monitoring window.
        schedule=timedelta(days=get_settings().monitoring.monitor_window_days),
        start_date=get_settings().monitoring.monitor_origin,
        params=PARAMS,
    )
)
def healthpredict_monitoring() -> None:
    """Monitor -> decide -> (retrain -> gate) -> commit -> (deliver)."""
    monitor = task(execution_timeout=timedelta(minutes=20))(steps.monitor)
    decide = task(execution_timeout=timedelta(minutes=20))(steps.decide)
    # Retrain, or skip retrain and gate (commit runs either way).
    branch = task.branch(execution_timeout=timedelta(minutes=5))(steps.branch)
    # One retry: training is the expensive step, and a retry reuses a registered challenger.
    retrain = task(retries=1, execution_timeout=timedelta(hours=1))(steps.retrain)
    gate = task(execution_timeout=timedelta(minutes=30))(steps.gate)
    # Runs after the gate, or without it when there is nothing to retrain. Three retries: one
    # transaction that replaces an earlier attempt's rows, and a store that restarts must not
    # cost the window.
    commit = task(
        trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS,
        retries=3,
        execution_timeout=timedelta(minutes=15),
    )(steps.commit)

    decided = decide(monitor())
    retrained = retrain(decided)
    committed = commit(decided)
    branch(decided) >> retrained
    gate(retrained) >> committed
    # One delivery per deployment and window, however often the request or the window is re-run.
    wiring.request_delivery(
        steps.delivery_request,
        committed,
        "from_monitoring__{{ ti.xcom_pull(task_ids='commit')['key'] }}",
    )


healthpredict_monitoring()
