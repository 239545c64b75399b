"""
### Health Predict: monitoring

One run per production batch: **score** it with the champion, run the **monitors** (data and
prediction drift, the label-free performance estimate, the realised performance of the batch
whose labels have just arrived), let the retraining policy **decide**, and when it says
retrain, **retrain** a challenger and **gate** it against the champion on patients neither has
seen. Then **commit**: everything the batch produced goes to the monitoring store in one
transaction. When the gate passes the challenger, the **delivery** DAG is triggered: it rolls
the challenger out and only then makes it champion; the next batch is scored by it.

- **Partitioned by the logical date.** A batch arrives every week: the run whose logical date
  falls in the n-th week after `first_batch_date` handles batch n. The `batch` param overrides
  the mapping (a manual run). Batches run in order: a run whose previous batch is not
  committed fails and says so; `airflow backfill create --dag-id healthpredict_monitoring
  --from-date ... --to-date ...` replays a range in order.
- **One run at a time**, no catch-up: runs share the loop's state and the challenger alias.
- **Idempotent tasks**: each task reads and extends the batch's pending record in the run
  folder; a retried task finds its own result there, a challenger registered by an earlier
  attempt is reused, and running a committed batch again changes nothing.
- **The gate decides, the delivery promotes**: this DAG never moves the `champion` alias.
- Settings (data, MLflow, monitoring store, thresholds) come from the worker's
  `HEALTHPREDICT_*` environment; params choose the run name and the policy.

Wiring only: every task calls one function of `healthpredict.orchestration.monitoring`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, TriggerRule, dag, task

from healthpredict.orchestration import monitoring as steps
from healthpredict.orchestration import policy

DELIVERY_DAG_ID = "healthpredict_delivery"


@dag(
    dag_id="healthpredict_monitoring",
    schedule=steps.BATCH_INTERVAL,
    start_date=steps.FIRST_BATCH_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=policy.default_args(),
    tags=[*policy.TAGS, "monitoring"],
    doc_md=__doc__,
    params={
        "batch": Param(
            None, type=["null", "integer"], minimum=1, description="Batch; empty: from the date."
        ),
        "first_batch_date": Param(
            steps.FIRST_BATCH_DATE.isoformat(),
            type="string",
            description="Logical date of batch 1 (ISO 8601).",
        ),
        "run_name": Param(
            "", type="string", description="Run name; empty: <set>-<policy>-airflow."
        ),
        "policy": Param("", type="string", description="Retraining policy; empty: the setting."),
    },
)
def healthpredict_monitoring() -> None:
    """Score -> monitor -> decide -> (retrain -> gate) -> commit -> (deliver)."""

    @task(execution_timeout=timedelta(minutes=20))
    def score(params: dict[str, Any] | None = None, logical_date: Any = None) -> dict[str, Any]:
        return steps.score(params, logical_date)

    @task(execution_timeout=timedelta(minutes=20))
    def monitor(scored: dict[str, Any]) -> dict[str, Any]:
        return steps.monitor(scored)

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
    # cost the batch.
    @task(trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS, retries=3,
          execution_timeout=timedelta(minutes=15))  # fmt: skip
    def commit(decided: dict[str, Any]) -> dict[str, Any]:
        return steps.commit(decided)

    @task.short_circuit(execution_timeout=timedelta(minutes=5))
    def delivery_request(committed: dict[str, Any]) -> dict[str, Any] | None:
        return steps.delivery_request(committed)

    decided = decide(monitor(score()))
    retrained = retrain(decided)
    gated = gate(retrained)
    committed = commit(decided)
    branch(decided) >> retrained
    gated >> committed
    request = delivery_request(committed)
    # One delivery per loop run and batch, however often this task or the batch is re-run.
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
