"""
### Health Predict: training

Prepare the data, search hyper-parameters, train, evaluate, register the challenger, and run
the promotion gate; when the challenger wins, trigger the **delivery** DAG, which rolls it out
and only then makes it champion.

- **Runs on demand** (the first model, a manual retrain): scheduled retraining is the
  monitoring DAG's decision, taken on evidence, not on a calendar.
- **One run at a time**: runs share the prepared data and the challenger alias.
- **Idempotent tasks**: a search, a training run, an evaluation, a registration or a gate
  verdict that already exists for the same inputs is reused, so a retried or repeated run
  costs little and never registers the same model twice.
- Settings come from the worker's `HEALTHPREDICT_*` environment (data source, MLflow server,
  budgets): see the README's configuration table.

Wiring only: every task calls one function of `healthpredict.orchestration.training`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import dag, task

from healthpredict.orchestration import policy
from healthpredict.orchestration import training as steps

DELIVERY_DAG_ID = "healthpredict_delivery"


@dag(
    dag_id="healthpredict_training",
    schedule=None,
    start_date=policy.START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=policy.default_args(),
    tags=[*policy.TAGS, "training"],
    doc_md=__doc__,
)
def healthpredict_training() -> None:
    """Prepare -> search -> train -> evaluate -> register -> gate -> (deliver)."""

    @task(execution_timeout=timedelta(minutes=30))
    def prepare() -> dict[str, Any]:
        return steps.prepare()

    # One retry: a search is the expensive step, and it has its own time budget.
    @task(retries=1, execution_timeout=timedelta(hours=2))
    def search(prepared: dict[str, Any]) -> dict[str, Any]:
        return steps.search(prepared)

    @task(retries=1, execution_timeout=timedelta(hours=1))
    def train(searched: dict[str, Any]) -> dict[str, Any]:
        return steps.train(searched)

    @task(execution_timeout=timedelta(minutes=30))
    def evaluate(trained: dict[str, Any]) -> dict[str, Any]:
        return steps.evaluate(trained)

    # Three retries: registering is cheap and idempotent, and an MLflow server that restarts
    # must not cost the whole run.
    @task(retries=3, execution_timeout=timedelta(minutes=15))
    def register(evaluated: dict[str, Any]) -> dict[str, Any]:
        return steps.register(evaluated)

    @task(execution_timeout=timedelta(minutes=30))
    def gate(registered: dict[str, Any]) -> dict[str, Any]:
        return steps.gate(registered)

    @task.short_circuit(execution_timeout=timedelta(minutes=5))
    def delivery_request(decision: dict[str, Any]) -> dict[str, Any] | None:
        return steps.delivery_request(decision)

    request = delivery_request(gate(register(evaluate(train(search(prepare()))))))
    # One delivery per training run, however often this task is retried.
    trigger = TriggerDagRunOperator(
        task_id="trigger_delivery",
        trigger_dag_id=DELIVERY_DAG_ID,
        trigger_run_id="from_training__{{ run_id }}",
        conf=request,
        skip_when_already_exists=True,
        execution_timeout=timedelta(minutes=5),
    )
    request >> trigger


healthpredict_training()
