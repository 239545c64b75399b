"""Fixtures of the DAG tests and the delivery tests: one Airflow home, one trained registry,
one live service.

The training DAG runs once per session (:func:`trained`) on a synthetic extract, on top of a
deliberately weak champion, so its challenger passes the gate and a delivery is requested.
The delivery tests reuse that registry and a real prediction service on loopback that serves
the challenger, as the pods of a rollout pinned to it would.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from healthpredict import processes
from tests.support.airflow_env import RunResult, dag_bag, environment, run_dag
from tests.synthetic import make_raw_frame, write_csv

API_KEY = "orchestration-test-key-0123456789"
MODEL = "health-predict-readmission"
WEAK = {"n_estimators": 2, "num_leaves": 2, "learning_rate": 0.05}


@dataclass(frozen=True)
class Trained:
    """The registry after one training DAG run, and what the run left (read right after it)."""

    env: dict[str, str]
    data_dir: Path
    run: RunResult
    weak_champion: str
    champion: str
    challenger: str
    challenger_tags: dict[str, str]
    delivery_requests: list[dict[str, Any]]


@pytest.fixture(scope="session")
def dagbag() -> Any:
    """The DAGs of ``dags/``, parsed once."""
    return dag_bag()


# What a training run needs to take a minute on a small synthetic extract: few batches, small
# search and bootstrap budgets, a gate that accepts a weak first model.
QUICK_TRAINING = {
    "HEALTHPREDICT_INITIAL_WINDOW_FRACTION": "0.7",
    "HEALTHPREDICT_N_BATCHES": "3",
    "HEALTHPREDICT_TEST_FRACTION": "0.2",
    "HEALTHPREDICT_GATE_WINDOW": "batch_001",
    "HEALTHPREDICT_BOOTSTRAP_ROUNDS": "50",
    "HEALTHPREDICT_CV_FOLDS": "3",
    "HEALTHPREDICT_MIN_CHAMPION_ROC_AUC": "0.5",
    "HEALTHPREDICT_TUNE_TRIALS": "1",
    "HEALTHPREDICT_TUNE_FOLDS": "2",
    "HEALTHPREDICT_TUNE_TIME_BUDGET_SECONDS": "120",
}


def training_env(folder: Path) -> dict[str, str]:
    """Settings of the DAG runs: a synthetic extract, small budgets, this folder only."""
    source = folder / "diabetic_data.csv"
    write_csv(make_raw_frame(6000, seed=21), str(source))
    return {
        "HEALTHPREDICT_DATA_SOURCE": str(source),
        "HEALTHPREDICT_DATA_DIR": str(folder / "data"),
        "HEALTHPREDICT_ID_SALT": "orchestration-test-salt",
        **QUICK_TRAINING,
    }


@pytest.fixture(scope="session")
def trained(dagbag: Any, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """A weak champion (v1), then the training DAG once: it registers and gates v2."""
    from airflow.models.dagrun import DagRun
    from mlflow import MlflowClient

    from healthpredict.modeling.train import default_params
    from healthpredict.pipelines.prepare_data import prepare_data
    from healthpredict.pipelines.train_and_register import train_and_register
    from healthpredict.settings import get_settings

    env = training_env(tmp_path_factory.mktemp("training-dag"))
    with environment(env):
        prepare_data(get_settings())
        weak = train_and_register(get_settings(), {**default_params(), "lightgbm": WEAK})
        run = run_dag(dagbag.dags["healthpredict_training"])
    data_dir = Path(env["HEALTHPREDICT_DATA_DIR"])
    client = MlflowClient(tracking_uri=f"sqlite:///{data_dir.resolve() / 'mlflow.db'}")
    champion = client.get_model_version_by_alias(MODEL, "champion")
    challenger = client.get_model_version_by_alias(MODEL, "challenger")
    requests = [
        {"run_id": dag_run.run_id, "conf": dag_run.conf}
        for dag_run in DagRun.find(dag_id="healthpredict_delivery")
        if dag_run.run_id.startswith("from_training__")
    ]
    return Trained(
        env,
        data_dir,
        run,
        weak.registered.version,
        str(champion.version),
        str(challenger.version),
        dict(challenger.tags),
        requests,
    )


def free_port() -> int:
    """A loopback port nothing listens on (yet)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def live_service(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real service (uvicorn on loopback) serving the challenger v2, like a pinned rollout."""
    import uvicorn

    from healthpredict.modeling.registry import CHALLENGER
    from healthpredict.serving.app import create_app
    from healthpredict.serving.model_store import ModelStore
    from healthpredict.settings import Settings

    folder = tmp_path_factory.mktemp("live-service")
    settings = Settings.from_flat(
        data_dir=trained.data_dir,
        id_salt="orchestration-test-salt",
        api_key=API_KEY,
        monitoring_db_url=f"sqlite:///{folder / 'monitoring.db'}",
        model_poll_seconds=0.0,
    )
    app = create_app(settings, store=ModelStore(settings, alias=CHALLENGER))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    thread = threading.Thread(target=server.run, name="live-service", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the live service did not start")
        time.sleep(0.05)
    # Ready before any test uses it: the model loads in the background, slowly on a busy
    # machine, and the smoke tests' own short /ready timeout is about the rollout, not this.
    url = f"http://127.0.0.1:{port}"
    why = processes.wait_until_ok(f"{url}/ready", timeout=180)
    if why is not None:
        pytest.fail(f"the live service {why}")
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=15)
