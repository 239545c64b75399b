"""The monitoring DAG with ``dag.test()``: window by window over a deployment's prediction log.

Traffic reaches the store as the service logs it (the service's scoring code, in process),
outcomes arrive a window later, and the DAG monitors each window. The champion is useless (its
trees may not split: it predicts one constant) but records the default hyper-parameters, which
its retrained challenger inherits, so the challenger trained at window 2 (on the outcomes of
window 1, scheduled policy) must pass the gate. The DAG records that verdict and requests a
delivery but leaves the alias; once the challenger is made champion the way the delivery DAG
does it, window 3 is served by it and the earlier verdict is confirmed as a promotion.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from tests.support.airflow_env import RunResult, environment, run_dag
from tests.support.dag_runs import MODEL, training_env

# Airflow's task timeouts use SIGALRM, which would silence pytest-timeout's signal method.
pytestmark = pytest.mark.timeout(600, method="thread")
MONITORING = "healthpredict_monitoring"
FIRST = datetime(2024, 1, 1, tzinfo=UTC)  # the default monitor_origin: window 1
WEEK = timedelta(days=7)
DEPLOYMENT = "ward-7"
USELESS = {"n_estimators": 2, "min_child_samples": 100_000}  # no split needs fewer rows
PHASES = ["monitor", "decide", "branch", "commit", "delivery_request"]
TABLES = ("windows", "window_versions", "feature_drift", "decisions", "window_performance",
          "loop_models", "predictions", "outcomes")  # fmt: skip


@dataclass(frozen=True)
class Monitored:
    """What three monitoring runs (and one repeated) left behind."""

    env: dict[str, str]
    runs: dict[str, RunResult]
    store_url: str
    champion_before_delivery: str
    aliases_after_window_2: dict[str, str]
    delivery_requests: list[dict[str, Any]]
    rows_after_window_2: dict[str, int]
    rows_after_repeat: dict[str, int]
    versions_after_window_2: list[str]
    versions_after_repeat: list[str]
    out_of_order: str


def _table(url: str, name: str) -> pd.DataFrame:
    from sqlalchemy import create_engine

    engine = create_engine(url)
    try:
        frame = pd.read_sql_table(name, engine)
    finally:
        engine.dispose()
    return frame[frame["deployment"] == DEPLOYMENT]


def _rows(url: str) -> dict[str, int]:
    return {name: len(_table(url, name)) for name in TABLES}


def _versions(client: Any) -> list[str]:
    return sorted(str(v.version) for v in client.search_model_versions(f"name = '{MODEL}'"))


def _aliases(client: Any) -> dict[str, str]:
    return {k: str(v) for k, v in client.get_registered_model(MODEL).aliases.items()}


def _serve_window(number: int) -> None:
    """Window ``number``'s traffic as the service logs it, and the outcomes of the one before."""
    from healthpredict.data.pseudonym import load_or_create_salt
    from healthpredict.loop import streams
    from healthpredict.loop.models import RegistrySlot
    from healthpredict.loop.traffic import InProcessTraffic
    from healthpredict.loop.windows import WindowClock
    from healthpredict.monitoring.store import make_engine
    from healthpredict.settings import get_settings

    settings = get_settings()
    stream = streams.natural_stream(settings)
    engine = make_engine(settings.monitoring_url)
    traffic = InProcessTraffic(
        settings, engine, DEPLOYMENT, RegistrySlot(settings), load_or_create_salt(settings)
    )
    window = WindowClock.from_settings(settings.monitoring).window(number)
    batch = stream.batches[number - 1]
    ids = streams.encounter_id(batch)
    traffic.serve(streams.requests(batch, ids, window, stream.patient_numbers()), 500)
    if number > 1:
        earlier = stream.batches[number - 2]
        traffic.send_outcomes(streams.outcomes(earlier, streams.encounter_id(earlier)), 10_000)
    engine.dispose()


@pytest.fixture(scope="module")
def monitored(dagbag: Any, tmp_path_factory: pytest.TempPathFactory) -> Monitored:
    from airflow.models.dagrun import DagRun
    from mlflow import MlflowClient

    from healthpredict.loop.context import LoopError
    from healthpredict.modeling import champion
    from healthpredict.modeling.train import default_params
    from healthpredict.orchestration import monitoring as steps
    from healthpredict.pipelines.prepare_data import prepare_data
    from healthpredict.pipelines.train_and_register import PARAMS_ARTIFACT, train_and_register
    from healthpredict.settings import get_settings

    folder = tmp_path_factory.mktemp("monitoring-dag")
    env = {
        **training_env(folder),
        "HEALTHPREDICT_POLICY": "scheduled",
        "HEALTHPREDICT_DEPLOYMENT": DEPLOYMENT,
        "HEALTHPREDICT_MONITORING_DB_URL": f"sqlite:///{folder / 'monitoring.db'}",
    }
    url = env["HEALTHPREDICT_MONITORING_DB_URL"]
    dag = dagbag.dags[MONITORING]
    runs = {}
    with environment(env):
        prepare_data(get_settings())
        weak = train_and_register(get_settings(), {**default_params(), "lightgbm": USELESS})
        client: Any = MlflowClient(get_settings().tracking_uri)
        client.log_dict(weak.registered.run_id, default_params(), PARAMS_ARTIFACT)
        _serve_window(1)
        runs["window 1"] = run_dag(dag, logical_date=FIRST)
        with pytest.raises(LoopError) as out_of_order:
            steps.decide({"deployment": DEPLOYMENT, "policy": "scheduled", "window": 2})
        _serve_window(2)
        runs["window 2"] = run_dag(dag, logical_date=FIRST + WEEK + timedelta(hours=5))
        rows_2, versions_2, aliases_2 = _rows(url), _versions(client), _aliases(client)
        runs["window 2 again"] = run_dag(dag, conf={"window": 2})
        rows_again, versions_again = _rows(url), _versions(client)
        # What the delivery DAG's last step does once the rollout is verified.
        champion.promote_gated(client, MODEL, aliases_2["challenger"], occasion="in a test")
        _serve_window(3)
        runs["window 3"] = run_dag(dag, conf={"window": 3})
    requests = [
        {"run_id": dag_run.run_id, "conf": dag_run.conf}
        for dag_run in DagRun.find(dag_id="healthpredict_delivery")
        if dag_run.run_id.startswith("from_monitoring__")
    ]
    return Monitored(
        env, runs, url, weak.registered.version, aliases_2, requests, rows_2, rows_again,
        versions_2, versions_again, str(out_of_order.value),
    )  # fmt: skip


def test_window_1_is_monitored_and_committed_without_retraining(monitored: Monitored) -> None:
    run = monitored.runs["window 1"]
    assert run.state == "success", run.tasks
    assert {task: run.tasks[task] for task in PHASES} == dict.fromkeys(PHASES, "success")
    # No outcomes yet: nothing to retrain, so no gate and no delivery.
    assert run.tasks["retrain"] == run.tasks["gate"] == "skipped"
    assert run.tasks["trigger_delivery"] == "skipped"


def test_window_2_retrains_gates_and_requests_a_delivery_but_moves_no_alias(
    monitored: Monitored,
) -> None:
    run = monitored.runs["window 2"]
    assert run.state == "success", run.tasks
    assert set(run.tasks.values()) == {"success"}, run.tasks
    champion, challenger = monitored.champion_before_delivery, "2"
    assert monitored.aliases_after_window_2 == {"champion": champion, "challenger": challenger}
    decisions = _table(monitored.store_url, "decisions").set_index("window")
    assert decisions.loc[2, ["action", "challenger_version"]].tolist() == ["retrain", challenger]
    assert decisions.loc[2, "labelled_window"] == 1
    assert decisions.loc[2, "gate"]["promote"] is True
    assert [request["conf"] for request in monitored.delivery_requests] == [
        {"model_version": challenger}
    ]


def test_each_window_is_in_the_store_once(monitored: Monitored) -> None:
    windows = _table(monitored.store_url, "windows").sort_values("window")
    assert windows["window"].tolist() == [1, 2, 3]
    assert (windows["status"] == "completed").all()
    rows = monitored.rows_after_window_2
    assert rows["predictions"] == windows.loc[windows["window"] <= 2, "n_predictions"].sum()
    assert rows["windows"] == 2 and rows["decisions"] == 2
    assert rows["window_performance"] == 1  # the outcomes of window 1


def test_a_committed_window_run_again_changes_nothing(monitored: Monitored) -> None:
    run = monitored.runs["window 2 again"]
    assert run.state == "success", run.tasks
    assert run.tasks["retrain"] == "skipped"  # committed: nothing is trained again
    assert monitored.rows_after_repeat == monitored.rows_after_window_2
    assert monitored.versions_after_repeat == monitored.versions_after_window_2
    # The verdict stands: the same delivery is asked for, and found requested already.
    assert run.tasks["delivery_request"] == "success"
    assert run.tasks["trigger_delivery"] == "skipped"
    assert len(monitored.delivery_requests) == 1


def test_the_delivered_challenger_serves_the_next_window(monitored: Monitored) -> None:
    run = monitored.runs["window 3"]
    assert run.state == "success", run.tasks
    windows = _table(monitored.store_url, "windows").set_index("window")
    assert windows["model_version"].tolist() == [monitored.champion_before_delivery] * 2 + ["2"]
    decisions = _table(monitored.store_url, "decisions").set_index("window")
    assert decisions.loc[2, "outcome"] == "promoted"  # confirmed once the challenger served
    models = _table(monitored.store_url, "loop_models").set_index("version")
    assert models.loc["2", "trained_at_window"] == 2
    assert models.loc["2", "baseline_estimated_auc"] > 0.5
    drift = _table(monitored.store_url, "window_versions").set_index("window")
    assert drift.loc[3, "model_version"] == "2"  # monitored against v2's own reference


def test_a_phase_needs_the_one_before(monitored: Monitored) -> None:
    assert "window 2 has not been monitored" in monitored.out_of_order


def test_the_logical_date_names_the_window() -> None:
    import pendulum

    from healthpredict.loop.windows import WindowError
    from healthpredict.orchestration.monitoring import WindowParamError, locate

    with environment({"HEALTHPREDICT_DEPLOYMENT": "d", "HEALTHPREDICT_POLICY": "never"}):
        assert locate({}, FIRST)["window"] == 1
        assert locate({}, FIRST + WEEK - timedelta(seconds=1))["window"] == 1
        assert locate({}, FIRST + 6 * WEEK)["window"] == 7
        assert locate({}, datetime(2024, 1, 15))["window"] == 3  # naive dates are UTC
        assert locate({}, pendulum.datetime(2024, 1, 9))["window"] == 2  # what Airflow hands out
        assert locate({"window": 4, "policy": "drift"}, FIRST) == {
            "deployment": "d", "policy": "drift", "window": 4,
        }  # fmt: skip
        with pytest.raises(WindowError, match="before the first window"):
            locate({}, FIRST - timedelta(days=1))
        with pytest.raises(WindowParamError, match="`window` param"):
            locate({}, None)
