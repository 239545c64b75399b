"""Train, register, serve and predict through real servers: PostgreSQL, S3 (moto), MLflow.

The MLflow server keeps runs and the registry in PostgreSQL and artifacts in the S3 bucket; the
prediction service is a real ``healthpredict serve`` process logging to PostgreSQL. A second
test stops the MLflow server in the middle of the register task: the task fails naming the
server, the half-registered version holds no alias, and the retry registers it cleanly. A
third runs the monitoring DAG for one batch with ``dag.test()``, its store in PostgreSQL.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, inspect, text

from tests.support import real_services as services
from tests.support.airflow_env import dag_bag, environment, run_dag
from tests.support.postgres import _free_port
from tests.support.real_services import RealServices, s3_client, stop_process_group, wait_http
from tests.synthetic import make_raw_frame, write_csv

pytestmark = pytest.mark.integration
real_services = services.real_services  # the session fixture, offered to this module
API_KEY = "real-services-key-0123456789"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "encounter.json"


def _env(services: RealServices, folder: Path, model: str) -> dict[str, str]:
    """Settings of a client of the real services (the pipelines, the service)."""
    source = folder / "diabetic_data.csv"
    write_csv(make_raw_frame(2500, seed=11), str(source))
    return {
        "HEALTHPREDICT_DATA_SOURCE": str(source),
        "HEALTHPREDICT_DATA_DIR": str(folder / "data"),
        "HEALTHPREDICT_ID_SALT": "real-services-salt",
        "HEALTHPREDICT_MLFLOW_TRACKING_URI": services.mlflow.url,
        # Proxied by the server to its S3 destination: no client needs bucket credentials.
        "HEALTHPREDICT_MLFLOW_ARTIFACT_LOCATION": f"mlflow-artifacts:/{model}",
        "HEALTHPREDICT_EXPERIMENT_NAME": model,
        "HEALTHPREDICT_MODEL_NAME": model,
        "HEALTHPREDICT_INITIAL_WINDOW_FRACTION": "0.7",
        "HEALTHPREDICT_N_BATCHES": "3",
        "HEALTHPREDICT_BOOTSTRAP_ROUNDS": "50",
        "HEALTHPREDICT_CV_FOLDS": "3",
        "HEALTHPREDICT_MIN_CHAMPION_ROC_AUC": "0.5",
    }


@dataclass(frozen=True)
class Served:
    """A running prediction service."""

    url: str
    process: subprocess.Popen[bytes]


@pytest.fixture
def service(real_services: RealServices, tmp_path: Path) -> Iterator[Any]:
    """Start ``healthpredict serve`` processes on the real services; all stopped afterwards."""
    started: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str]) -> Served:
        port = _free_port()
        log = tmp_path / f"service-{port}.log"
        values = {
            **{k: v for k, v in os.environ.items() if not k.startswith("HEALTHPREDICT_")},
            **env,
            "HEALTHPREDICT_API_KEY": API_KEY,
            "HEALTHPREDICT_MONITORING_DB_URL": real_services.database_url("monitoring"),
            "HEALTHPREDICT_MODEL_POLL_SECONDS": "0",
            "HEALTHPREDICT_LOG_FLUSH_SECONDS": "0.2",
        }
        command = [str(Path(sys.executable).parent / "healthpredict"), "serve", "--port", str(port)]
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, env=values, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/ready", process, log, timeout=120)
        return Served(url, process)

    yield start
    for process in started:
        stop_process_group(process)


@dataclass(frozen=True)
class TrainedRun:
    """A model trained and evaluated through the MLflow server by the training DAG's tasks."""

    env: dict[str, str]
    evaluated: dict[str, Any]


@pytest.fixture(scope="module")
def trained_run(
    real_services: RealServices, tmp_path_factory: pytest.TempPathFactory
) -> TrainedRun:
    """prepare -> train -> evaluate, as the DAG runs them, against the real servers."""
    from healthpredict.modeling.train import default_params
    from healthpredict.orchestration import training as steps

    env = _env(real_services, tmp_path_factory.mktemp("trained-run"), "health-predict")
    with environment(env):
        prepared = steps.prepare()
        # The search is left out (Ray is tested elsewhere): the default parameters stand in.
        searched = {**prepared, "params": default_params(), "search_run_id": ""}
        evaluated = steps.evaluate(steps.train(searched))
    return TrainedRun(env, evaluated)


def test_train_register_serve_and_predict(
    real_services: RealServices, trained_run: TrainedRun, service: Any
) -> None:
    from mlflow import MlflowClient

    from healthpredict.orchestration import training as steps

    model = "served-model"
    env = {**trained_run.env, "HEALTHPREDICT_MODEL_NAME": model}
    with environment(env):
        registered = steps.register(trained_run.evaluated)
    assert registered["alias"] == "champion"

    # The registry and the runs are in PostgreSQL, the model files in the bucket.
    engine = create_engine(real_services.database_url("mlflow"))
    with engine.connect() as connection:
        names = connection.execute(text("SELECT name FROM registered_models")).scalars().all()
        run_ids = connection.execute(text("SELECT run_uuid FROM runs")).scalars().all()
    engine.dispose()
    assert model in names and trained_run.evaluated["run_id"] in run_ids
    listing = s3_client(real_services.s3_endpoint).list_objects_v2(  # type: ignore[attr-defined]
        Bucket=real_services.bucket, Prefix="mlflow/"
    )
    keys = [item["Key"] for item in listing.get("Contents", [])]
    assert any(key.endswith("model.pkl") for key in keys), keys[:20]
    assert any(key.endswith("evaluation/evaluation.json") for key in keys), keys[:20]
    champion = MlflowClient(tracking_uri=real_services.mlflow.url).get_model_version_by_alias(
        model, "champion"
    )
    assert str(champion.version) == registered["version"]

    served = service(env)
    answer = requests.post(
        f"{served.url}/predict",
        data=EXAMPLE.read_bytes(),
        headers={"X-API-Key": API_KEY, "Content-Type": "application/json"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model_version"] == registered["version"]
    assert 0.0 <= body["probability"] <= 1.0
    _wait_logged(real_services.database_url("monitoring"), body["request_id"])


def _wait_logged(url: str, request_id: str, timeout: float = 20.0) -> None:
    """The service's prediction log reached PostgreSQL."""
    engine = create_engine(url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            with engine.connect() as connection:
                if inspect(connection).has_table("predictions"):  # created by the first flush
                    found = connection.execute(
                        text("SELECT count(*) FROM predictions WHERE request_id = :id"),
                        {"id": request_id},
                    ).scalar_one()
                    if found:
                        return
            time.sleep(0.2)
    finally:
        engine.dispose()
    pytest.fail(f"prediction {request_id} was not logged to PostgreSQL within {timeout}s")


def test_mlflow_server_stopped_during_register(
    real_services: RealServices, trained_run: TrainedRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    from mlflow import MlflowClient

    from healthpredict.modeling.tracking import TrackingUnavailableError
    from healthpredict.orchestration import training as steps

    model = "fault-model"
    server = real_services.mlflow
    # Fail in one attempt instead of MLflow's minutes of backoff: Airflow does the retrying.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    register_model = mlflow.register_model

    def register_then_lose_the_server(*args: Any, **kwargs: Any) -> Any:
        created = register_model(*args, **kwargs)
        server.stop()  # gone between the new version and its tags and alias
        return created

    with environment({**trained_run.env, "HEALTHPREDICT_MODEL_NAME": model}):
        monkeypatch.setattr(mlflow, "register_model", register_then_lose_the_server)
        with pytest.raises(TrackingUnavailableError, match=f"MLflow tracking server {server.url}"):
            steps.register(trained_run.evaluated)
        monkeypatch.setattr(mlflow, "register_model", register_model)

        server.start()
        client = MlflowClient(tracking_uri=server.url)
        (found,) = client.search_model_versions(f"name = '{model}'")
        half = client.get_model_version(model, str(found.version))
        assert half.aliases == [] and "promotion_reason" not in half.tags
        assert client.get_registered_model(model).aliases == {}

        retried = steps.register(trained_run.evaluated)  # what Airflow's retry runs
    assert retried["alias"] == "champion" and retried["version"] != str(half.version)
    versions = client.search_model_versions(f"name = '{model}'")
    assert [str(v.version) for v in versions] == [retried["version"]], "the half one is gone"
    assert client.get_registered_model(model).aliases == {"champion": retried["version"]}


def test_monitoring_dag_runs_a_window_against_the_real_services(
    real_services: RealServices, trained_run: TrainedRun
) -> None:
    """One window through the monitoring DAG: store in PostgreSQL, registry on the MLflow server.

    The window's traffic is logged as the service logs it, its outcomes arrive before it is
    monitored, and the policy retrains on every labelled window, so the run also trains,
    registers (artifacts in S3) and gates a challenger through the server.
    """
    from mlflow import MlflowClient

    from healthpredict.data.pseudonym import load_or_create_salt
    from healthpredict.loop import streams
    from healthpredict.loop.models import DEPLOYMENT_TAG, RegistrySlot
    from healthpredict.loop.traffic import InProcessTraffic
    from healthpredict.loop.windows import WindowClock
    from healthpredict.monitoring.store import make_engine
    from healthpredict.orchestration import training as steps
    from healthpredict.settings import get_settings

    model, deployment = "monitored-model", "pg-deployment"
    store_url = real_services.database_url("monitoring")
    env = {
        **trained_run.env,
        "HEALTHPREDICT_MODEL_NAME": model,
        "HEALTHPREDICT_MONITORING_DB_URL": store_url,
        "HEALTHPREDICT_POLICY": "scheduled",
        "HEALTHPREDICT_DEPLOYMENT": deployment,
    }
    with environment(env):
        champion = steps.register(trained_run.evaluated)["version"]
        settings = get_settings()
        stream = streams.natural_stream(settings)
        engine = make_engine(store_url)
        traffic = InProcessTraffic(
            settings, engine, deployment, RegistrySlot(settings), load_or_create_salt(settings)
        )
        window = WindowClock.from_settings(settings.monitoring).window(1)
        batch, patients = stream.batches[0], stream.patient_numbers()
        ids = streams.encounter_id(batch)
        traffic.serve(streams.requests(batch, ids, window, patients), 500)
        traffic.send_outcomes(streams.outcomes(batch, ids), 10_000)
        engine.dispose()
        result = run_dag(dag_bag().dags["healthpredict_monitoring"], {"window": 1})
    assert result.state == "success", result.tasks
    assert result.tasks["retrain"] == result.tasks["gate"] == "success"

    engine = create_engine(store_url)
    with engine.connect() as connection:
        windows = connection.execute(
            text(
                'SELECT "window", status, n_predictions, model_version FROM windows '
                "WHERE deployment = :d"
            ),
            {"d": deployment},
        ).all()
        logged = connection.execute(
            text("SELECT count(*) FROM predictions WHERE deployment = :d"), {"d": deployment}
        ).scalar_one()
        decision = connection.execute(
            text(
                "SELECT action, outcome, challenger_version, error FROM decisions "
                'WHERE deployment = :d AND "window" = 1'
            ),
            {"d": deployment},
        ).one()
    engine.dispose()
    ((number, status, n_predictions, served_by),) = windows
    assert (number, status, served_by) == (1, "completed", champion)
    assert logged == n_predictions == len(stream.batches[0])
    assert decision.action == "retrain" and decision.outcome in ("passed", "refused"), decision
    client = MlflowClient(tracking_uri=real_services.mlflow.url)
    challenger = client.get_model_version(model, decision.challenger_version)
    assert challenger.tags["gate_champion_version"] == champion
    assert challenger.tags[DEPLOYMENT_TAG].startswith(f"{deployment}@")
    # The gate decided; the alias is the delivery's to move.
    assert client.get_registered_model(model).aliases["champion"] == champion


def test_register_task_is_retried_by_airflow() -> None:
    task = dag_bag().dags["healthpredict_training"].get_task("register")
    assert task.retries >= 1 and task.retry_delay.total_seconds() > 0
