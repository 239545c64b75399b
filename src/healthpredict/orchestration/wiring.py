"""What the DAG files share beyond :mod:`.policy`: how a DAG is declared and asks for delivery.

Only the DAG files import this module (it imports Airflow). The task functions live in the
modules beside it and in :mod:`healthpredict.delivery`; a DAG file makes them tasks as they
are, ``task(retries=1, ...)(steps.search)``, so it holds no task bodies.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import task

from healthpredict.orchestration import policy

DELIVERY_DAG_ID = "healthpredict_delivery"


def dag_arguments(dag_id: str, doc: str | None, kind: str, **overrides: Any) -> dict[str, Any]:
    """The ``@dag`` arguments every Health Predict DAG shares, with ``overrides``.

    On demand (no schedule), no catch-up, and one run at a time: every DAG changes shared
    state (the prepared data, the challenger alias, the Deployment).
    """
    values: dict[str, Any] = {
        "dag_id": dag_id,
        "schedule": None,
        "start_date": policy.START_DATE,
        "catchup": False,
        "max_active_runs": 1,
        "default_args": policy.default_args(),
        "tags": [*policy.TAGS, kind],
        "doc_md": doc,
    }
    return {**values, **overrides}


def request_delivery(
    request: Callable[[dict[str, Any]], dict[str, Any] | None], upstream: Any, run_id: str
) -> None:
    """Trigger the delivery DAG with the conf ``request`` returns; None skips the trigger.

    ``request`` becomes a short-circuit task on ``upstream``; ``run_id`` (a template) names
    the delivery run, so there is one per ``run_id`` however often the tasks are retried.
    """
    conf = task.short_circuit(execution_timeout=timedelta(minutes=5))(request)(upstream)
    trigger = TriggerDagRunOperator(
        task_id="trigger_delivery",
        trigger_dag_id=DELIVERY_DAG_ID,
        trigger_run_id=run_id,
        conf=conf,  # type: ignore[arg-type]  # an XComArg: Airflow resolves it at run time
        skip_when_already_exists=True,
        execution_timeout=timedelta(minutes=5),
    )
    conf >> trigger
