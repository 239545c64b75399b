"""The compose stack for real: up --build with podman-compose, healthy, trained, serving, down.

``deploy/compose/compose.yaml`` (with ``compose.standin.yaml`` where the upstream PostgreSQL,
MinIO, Python and Airflow images cannot be pulled) comes up through
:mod:`healthpredict.delivery.stack`; a training DAG run triggered through Airflow's REST API
registers a model in the stack's MLflow; the stack's own prediction service loads it and
answers; ``down -v`` leaves nothing. One more compose file, written here, gives the training
task a small synthetic extract and a small search budget, so the run takes a minute or two.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from healthpredict.delivery import stack
from healthpredict.loop.service import free_port
from healthpredict.serving.examples import EXAMPLE_ENCOUNTER
from tests.support.containers import engine_or_skip
from tests.support.dag_runs import QUICK_TRAINING
from tests.synthetic import make_raw_frame, write_csv

# Building every image and starting eleven services takes minutes on two cores.
pytestmark = [pytest.mark.containers, pytest.mark.timeout(1800)]
TRAINING_DAG = "healthpredict_training"
MODEL = "health-predict-readmission"
PORTS = ("SERVICE_HOST_PORT", "MLFLOW_HOST_PORT", "AIRFLOW_HOST_PORT", "MINIO_CONSOLE_HOST_PORT")
# The extract the override below mounts, and the small budgets of tests/support/dag_runs.py.
TRAINING = {
    "HEALTHPREDICT_DATA_SOURCE": "/opt/airflow/source/diabetic_data.csv",
    **QUICK_TRAINING,
}


def read_env(path: Path) -> dict[str, str]:
    """The .env file as a mapping."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {name.strip(): value.strip() for name, value in pairs if not name.startswith("#")}


@pytest.fixture(scope="module")
def running(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[stack.Stack, dict[str, str]]]:
    """The stack, up and settled; torn down (and checked empty) afterwards."""
    engine_or_skip()
    folder = tmp_path_factory.mktemp("compose-stack")
    env_file = folder / ".env"
    subprocess.run(
        [sys.executable, str(stack.COMPOSE_DIR / "init_env.py"), "--output", str(env_file)],
        check=True,
    )
    ports = {name: str(free_port()) for name in PORTS}
    with env_file.open("a") as handle:  # later lines win: free loopback ports for this run
        handle.writelines(f"{name}={port}\n" for name, port in ports.items())
    source = folder / "diabetic_data.csv"
    write_csv(make_raw_frame(2500, seed=11), str(source))
    source.chmod(0o644)
    override = folder / "compose.test.yaml"
    scheduler = {  # LocalExecutor: the scheduler's container runs the tasks
        "environment": TRAINING,
        "volumes": [f"{source}:/opt/airflow/source/diabetic_data.csv:ro"],
    }
    override.write_text(yaml.safe_dump({"services": {"airflow-scheduler": scheduler}}))
    compose = stack.Stack.for_machine(f"hp-test-{uuid.uuid4().hex[:6]}", env_file, [override])
    try:
        settled = stack.up(compose, timeout=900)
        assert {c.service for c in settled} >= {
            "postgres",
            "minio",
            "minio-setup",
            "mlflow",
            "airflow-init",
            "airflow-apiserver",
            "airflow-scheduler",
            "airflow-dag-processor",
            "healthpredict-service",
        }
        yield compose, {**read_env(env_file), **ports}
    finally:
        stack.down(compose)


def test_every_health_check_turns_healthy(running: tuple[stack.Stack, dict[str, str]]) -> None:
    compose, _ = running
    current = stack.containers(compose)
    checked = {c.service: c.health for c in current if c.health is not None and not c.one_shot}
    assert set(checked) >= {
        "postgres",
        "minio",
        "mlflow",
        "airflow-apiserver",
        "healthpredict-service",
    }
    assert set(checked.values()) == {"healthy"}, checked
    one_shots = {c.service: c.exit_code for c in current if c.one_shot}
    assert one_shots == {"minio-setup": 0, "airflow-init": 0}


def test_a_training_run_through_airflow_serves_its_model(
    running: tuple[stack.Stack, dict[str, str]],
) -> None:
    _, env = running
    airflow = AirflowApi(
        f"http://127.0.0.1:{env['AIRFLOW_HOST_PORT']}", env["AIRFLOW_ADMIN_PASSWORD"]
    )
    run = airflow.trigger_and_wait(TRAINING_DAG, timeout=900)
    assert run["state"] == "success", airflow.failure_report(TRAINING_DAG, run["dag_run_id"])

    mlflow = f"http://127.0.0.1:{env['MLFLOW_HOST_PORT']}"
    answer = requests.get(
        f"{mlflow}/api/2.0/mlflow/registered-models/alias",
        params={"name": MODEL, "alias": "champion"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    version = answer.json()["model_version"]["version"]

    service = f"http://127.0.0.1:{env['SERVICE_HOST_PORT']}"
    reload = requests.post(
        f"{service}/admin/reload",
        headers={"X-Admin-Key": env["HEALTHPREDICT_ADMIN_KEY"]},
        timeout=120,
    )
    assert reload.status_code == 200, reload.text
    prediction = requests.post(
        f"{service}/predict",
        json=EXAMPLE_ENCOUNTER,
        headers={"X-API-Key": env["HEALTHPREDICT_API_KEY"]},
        timeout=30,
    )
    assert prediction.status_code == 200, prediction.text
    body = prediction.json()
    assert 0.0 <= body["probability"] <= 1.0
    assert str(body["model_version"]) == str(version)


class AirflowApi:
    """Airflow 3's REST API with a token from the simple auth manager."""

    def __init__(self, url: str, password: str):
        self.url = url
        token = requests.post(
            f"{url}/auth/token", json={"username": "admin", "password": password}, timeout=30
        )
        token.raise_for_status()
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token.json()['access_token']}"

    def trigger_and_wait(self, dag_id: str, timeout: float) -> dict[str, Any]:
        """Unpause ``dag_id`` once it is parsed, trigger a run, and wait for it to end."""
        deadline = time.monotonic() + timeout
        while self.session.get(f"{self.url}/api/v2/dags/{dag_id}", timeout=30).status_code != 200:
            assert time.monotonic() < deadline, f"{dag_id} was never parsed"
            time.sleep(3)
        self.session.patch(
            f"{self.url}/api/v2/dags/{dag_id}", json={"is_paused": False}, timeout=30
        ).raise_for_status()
        created = self.session.post(
            f"{self.url}/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None}, timeout=30
        )
        created.raise_for_status()
        run_id = created.json()["dag_run_id"]
        while True:
            run = self.session.get(
                f"{self.url}/api/v2/dags/{dag_id}/dagRuns/{run_id}", timeout=30
            ).json()
            if run["state"] in ("success", "failed") or time.monotonic() > deadline:
                return dict(run)
            time.sleep(5)

    def failure_report(self, dag_id: str, run_id: str) -> str:
        """Each task's state, and the log of those that failed."""
        base = f"{self.url}/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances"
        tasks = self.session.get(base, timeout=30).json().get("task_instances", [])
        lines = [f"{t['task_id']}: {t['state']}" for t in tasks]
        for task in tasks:
            if task["state"] not in ("success", "skipped"):
                log = self.session.get(
                    f"{base}/{task['task_id']}/logs/{max(task.get('try_number') or 1, 1)}",
                    headers={"Accept": "text/plain"},
                    timeout=30,
                )
                lines.append(f"--- {task['task_id']}\n{log.text[-3000:]}")
        return "\n".join(lines)
