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

Wiring only: every task is one function of `healthpredict.orchestration.training`, each a step
of the CLI's training flow (the same MLflow runs as `healthpredict tune`).
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, task

from healthpredict.orchestration import training as steps
from healthpredict.orchestration import wiring


@dag(**wiring.dag_arguments("healthpredict_training", __doc__, "training"))
def healthpredict_training() -> None:
    """Prepare -> search -> train -> evaluate -> register -> gate -> (deliver)."""
    prepare = task(execution_timeout=timedelta(minutes=30))(steps.prepare)
    # One retry: a search is the expensive step, and it has its own time budget.
    search = task(retries=1, execution_timeout=timedelta(hours=2))(steps.search)
    train = task(retries=1, execution_timeout=timedelta(hours=1))(steps.train)
    evaluate = task(execution_timeout=timedelta(minutes=30))(steps.evaluate)
    # Three retries: registering is cheap and idempotent, and an MLflow server that restarts
    # must not cost the whole run.
    register = task(retries=3, execution_timeout=timedelta(minutes=15))(steps.register)
    gate = task(execution_timeout=timedelta(minutes=30))(steps.gate)

    decision = gate(register(evaluate(train(search(prepare())))))
    # One delivery per training run, however often the request is retried.
    wiring.request_delivery(steps.delivery_request, decision, "from_training__{{ run_id }}")


healthpredict_training()
