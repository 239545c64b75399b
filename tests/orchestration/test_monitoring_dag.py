"""The monitoring DAG with ``dag.test()``: batch by batch on synthetic data, a real registry.

The champion is useless (its trees may not split: it predicts one constant) but records the
default hyper-parameters, which its retrained challenger inherits, so the challenger trained
at batch 2 (on the labels of batch 1, scheduled policy) must pass the gate. The DAG records
that verdict and requests a delivery but leaves the alias; once the challenger is made
champion the way the delivery DAG does it, the next batch is scored by it and the earlier
verdict is confirmed as a promotion.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from tests.orchestration.airflow_env import RunResult, environment, run_dag
from tests.orchestration.conftest import MODEL, training_env

# Airflow's task timeouts use SIGALRM, which would silence pytest-timeout's signal method.
pytestmark = pytest.mark.timeout(600, method="thread")
MONITORING = "healthpredict_monitoring"
FIRST = datetime(2024, 1, 1, tzinfo=UTC)  # the DAG's first_batch_date default
WEEK = timedelta(days=7)
RUN = "none-scheduled-airflow"  # <scenario set>-<policy>-airflow
# No split needs fewer rows than this: the model predicts the base rate for everyone.
USELESS = {"n_estimators": 2, "min_child_samples": 100_000}
PHASES = ["score", "monitor", "decide", "branch", "commit", "delivery_request"]


@dataclass(frozen=True)
class Monitored:
    """What three monitoring runs (and one repeated) left behind."""

    env: dict[str, str]
    runs: dict[str, RunResult]
    store_url: str
    champion_before_delivery: str
    aliases_after_batch_2: dict[str, str]
    outcome_after_batch_2: str
    delivery_requests: list[dict[str, Any]]
    rows_after_batch_2: dict[str, int]
    rows_after_repeat: dict[str, int]
    versions_after_batch_2: list[str]
    versions_after_repeat: list[str]
    out_of_order: str


def _rows(url: str) -> dict[str, int]:
    from sqlalchemy import func, select

    from healthpredict.monitoring import store

    engine = store.make_engine(url)
    counts = {}
    with engine.begin() as connection:
        for table in (store.simulation_batches, store.feature_drift, store.simulation_decisions,
                      store.batch_performance, store.simulation_models):  # fmt: skip
            query = select(func.count()).select_from(table).where(table.c.run == RUN)
            counts[table.name] = int(connection.execute(query).scalar() or 0)
        logged = store.predictions.c.request_id.like(f"simulation:{RUN}:%")
        query = select(func.count()).select_from(store.predictions).where(logged)
        counts["predictions"] = int(connection.execute(query).scalar() or 0)
    engine.dispose()
    return counts


def _versions(client: Any) -> list[str]:
    return sorted(str(v.version) for v in client.search_model_versions(f"name = '{MODEL}'"))


def _aliases(client: Any) -> dict[str, str]:
    return {k: str(v) for k, v in client.get_registered_model(MODEL).aliases.items()}


@pytest.fixture(scope="module")
def monitored(dagbag: Any, tmp_path_factory: pytest.TempPathFactory) -> Monitored:
    from airflow.models.dagrun import DagRun
    from mlflow import MlflowClient

    from healthpredict.delivery.promotion import move_champion
    from healthpredict.delivery.release import Release
    from healthpredict.modeling.train import default_params
    from healthpredict.orchestration import monitoring as steps
    from healthpredict.pipelines.prepare_data import prepare_data
    from healthpredict.pipelines.streams import SimulationError
    from healthpredict.pipelines.train_and_register import PARAMS_ARTIFACT, train_and_register
    from healthpredict.settings import get_settings

    folder = tmp_path_factory.mktemp("monitoring-dag")
    control = resources.files("healthpredict.monitoring") / "scenarios" / "control.yaml"
    env = {
        **training_env(folder),
        "HEALTHPREDICT_POLICY": "scheduled",
        "HEALTHPREDICT_SCENARIOS_FILE": str(control),
        "HEALTHPREDICT_MONITORING_DB_URL": f"sqlite:///{folder / 'monitoring.db'}",
    }
    dag = dagbag.dags[MONITORING]
    runs = {}
    with environment(env):
        prepare_data(get_settings())
        weak = train_and_register(get_settings(), {**default_params(), "lightgbm": USELESS})
        client: Any = MlflowClient(get_settings().tracking_uri)
        client.log_dict(weak.registered.run_id, default_params(), PARAMS_ARTIFACT)
        runs["batch 1"] = run_dag(dag, logical_date=FIRST)
        with pytest.raises(SimulationError) as out_of_order:
            steps.score({"batch": 3}, None)
        runs["batch 2"] = run_dag(dag, logical_date=FIRST + WEEK + timedelta(hours=5))
        url = env["HEALTHPREDICT_MONITORING_DB_URL"]
        rows_2, versions_2, aliases_2 = _rows(url), _versions(client), _aliases(client)
        outcome_2 = _table(url, "simulation_decisions").set_index("step").loc[2, "outcome"]
        runs["batch 2 again"] = run_dag(dag, conf={"batch": 2})
        rows_again, versions_again = _rows(url), _versions(client)
        # What the delivery DAG's last step does once the rollout is verified.
        release = Release("0a1b2c3d", "registry/healthpredict:0a1b2c3d", aliases_2["challenger"])
        move_champion(client, MODEL, aliases_2["challenger"], release)
        runs["batch 3"] = run_dag(dag, conf={"batch": 3})
    requests = [
        {"run_id": dag_run.run_id, "conf": dag_run.conf}
        for dag_run in DagRun.find(dag_id="healthpredict_delivery")
        if dag_run.run_id.startswith("from_monitoring__")
    ]
    return Monitored(
        env, runs, url, weak.registered.version, aliases_2, outcome_2, requests, rows_2,
        rows_again, versions_2, versions_again, str(out_of_order.value),
    )  # fmt: skip


def _table(url: str, name: str) -> Any:
    import pandas as pd
    from sqlalchemy import create_engine

    engine = create_engine(url)
    try:
        frame = pd.read_sql_table(name, engine)
    finally:
        engine.dispose()
    return frame[frame["run"] == RUN]


def test_batch_1_is_scored_monitored_and_committed_without_retraining(
    monitored: Monitored,
) -> None:
    run = monitored.runs["batch 1"]
    assert run.state == "success", run.tasks
    assert {task: run.tasks[task] for task in PHASES} == dict.fromkeys(PHASES, "success")
    # No labels yet: nothing to retrain, so no gate and no delivery.
    assert run.tasks["retrain"] == run.tasks["gate"] == "skipped"
    assert run.tasks["trigger_delivery"] == "skipped"


def test_batch_2_retrains_gates_and_requests_a_delivery_but_moves_no_alias(
    monitored: Monitored,
) -> None:
    run = monitored.runs["batch 2"]
    assert run.state == "success", run.tasks
    assert set(run.tasks.values()) == {"success"}, run.tasks
    champion, challenger = monitored.champion_before_delivery, "2"
    assert monitored.aliases_after_batch_2 == {"champion": champion, "challenger": challenger}
    assert monitored.outcome_after_batch_2 == "passed"  # the gate passed it; nothing moved
    decisions = _table(monitored.store_url, "simulation_decisions").set_index("step")
    assert decisions.loc[2, ["action", "challenger_version"]].tolist() == ["retrain", challenger]
    assert decisions.loc[2, "gate"]["promote"] is True
    assert [request["conf"] for request in monitored.delivery_requests] == [
        {"model_version": challenger}
    ]


def test_each_batch_is_in_the_store_once(monitored: Monitored) -> None:
    batches = _table(monitored.store_url, "simulation_batches").sort_values("batch")
    assert batches["batch"].tolist() == [1, 2, 3]
    assert (batches["status"] == "completed").all()
    predictions = monitored.rows_after_batch_2["predictions"]
    assert predictions == batches.loc[batches["batch"] <= 2, "n_rows"].sum()
    assert monitored.rows_after_batch_2["simulation_batches"] == 2
    assert monitored.rows_after_batch_2["simulation_decisions"] == 2
    assert monitored.rows_after_batch_2["batch_performance"] == 1  # the labels of batch 1


def test_a_committed_batch_run_again_changes_nothing(monitored: Monitored) -> None:
    run = monitored.runs["batch 2 again"]
    assert run.state == "success", run.tasks
    assert run.tasks["retrain"] == "skipped"  # committed: nothing is trained again
    assert monitored.rows_after_repeat == monitored.rows_after_batch_2
    assert monitored.versions_after_repeat == monitored.versions_after_batch_2
    # The verdict stands: the same delivery is asked for, and found requested already.
    assert run.tasks["delivery_request"] == "success"
    assert run.tasks["trigger_delivery"] == "skipped"
    assert len(monitored.delivery_requests) == 1


def test_the_delivered_challenger_scores_the_next_batch(monitored: Monitored) -> None:
    run = monitored.runs["batch 3"]
    assert run.state == "success", run.tasks
    batches = _table(monitored.store_url, "simulation_batches").set_index("batch")
    assert batches["model_version"].tolist() == [monitored.champion_before_delivery] * 2 + ["2"]
    decisions = _table(monitored.store_url, "simulation_decisions").set_index("step")
    assert decisions.loc[2, "outcome"] == "promoted"  # confirmed once the challenger served
    models = _table(monitored.store_url, "simulation_models").set_index("version")
    assert models.loc["2", "trained_at_step"] == 2
    assert models.loc["2", "baseline_estimated_auc"] > 0.5
    reference = Path(monitored.env["HEALTHPREDICT_DATA_DIR"]) / "simulation" / RUN / "references"
    assert (reference / "v2.parquet").is_file()


def test_batches_run_in_order(monitored: Monitored) -> None:
    assert "batch 3 cannot run before batch 2 is committed" in monitored.out_of_order


def test_the_logical_date_names_the_batch() -> None:
    import pendulum

    from healthpredict.orchestration.monitoring import BatchError, batch_for, locate

    assert batch_for(FIRST, FIRST) == 1
    assert batch_for(FIRST + WEEK - timedelta(seconds=1), FIRST) == 1
    assert batch_for(FIRST + 6 * WEEK, FIRST) == 7
    assert batch_for(datetime(2024, 1, 15), FIRST) == 3  # naive dates are UTC
    assert batch_for(pendulum.datetime(2024, 1, 9), FIRST) == 2  # what Airflow hands out
    with pytest.raises(BatchError, match="before the first batch"):
        batch_for(FIRST - timedelta(days=1), FIRST)
    given = {"batch": 4, "run_name": "r", "policy": "never"}
    assert locate(given, FIRST) == {"run": "r", "policy": "never", "batch": 4}
    later = {"first_batch_date": "2025-03-03", "run_name": "r", "policy": "never"}
    assert locate(later, datetime(2025, 3, 17, tzinfo=UTC))["batch"] == 3
    with pytest.raises(BatchError, match="`batch` param"):
        locate({"run_name": "r", "policy": "never"}, None)
