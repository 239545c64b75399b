"""The service image, run for real: as its unprivileged user on a read-only root file system,
loading the champion from an MLflow server over the network, answering as the service does in
process, healthy by its own HEALTHCHECK, and flushing its prediction log when stopped."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests

from healthpredict.delivery import engine
from healthpredict.loop.service import free_port
from healthpredict.serving.examples import EXAMPLE_ENCOUNTER
from tests.support.containers import MODEL, Registry, run_engine, volume_path

pytestmark = pytest.mark.containers
API_KEY = "container-test-key-0123456789"
UID = 10001  # the image's user (deploy/docker/Dockerfile.service)


@dataclass(frozen=True)
class Running:
    """A started service container and its published loopback port."""

    name: str
    volume: str
    url: str


@pytest.fixture(scope="module")
def container(service_image: engine.Built, registry: Registry) -> Iterator[Running]:
    name, volume, port = f"hp-{uuid.uuid4().hex[:8]}", f"hpdata-{uuid.uuid4().hex[:8]}", free_port()
    run_engine(
        "run",
        "-d",
        "--name",
        name,
        "--read-only",
        "--tmpfs",
        "/tmp:rw,size=512m",  # the writable paths of the Deployment
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "-v",
        f"{volume}:/var/lib/healthpredict",
        "-e",
        f"HEALTHPREDICT_API_KEY={API_KEY}",
        "-e",
        f"HEALTHPREDICT_MLFLOW_TRACKING_URI={registry.url_from_container}",
        "-e",
        f"HEALTHPREDICT_MODEL_NAME={MODEL}",
        "-e",
        "HEALTHPREDICT_ID_SALT=container-test-salt",
        # Only the shutdown flush writes the log within the test: it must not be lost.
        "-e",
        "HEALTHPREDICT_LOG_FLUSH_SECONDS=600",
        "-p",
        f"127.0.0.1:{port}:8000",
        service_image.tag,
    )
    try:
        yield Running(name, volume, f"http://127.0.0.1:{port}")
    finally:
        run_engine("rm", "-f", name, check=False)
        run_engine("volume", "rm", "-f", volume, check=False)


def _wait_ready(url: str, timeout: float = 180.0) -> dict[str, object]:
    deadline, last = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        try:
            answer = requests.get(f"{url}/ready", timeout=5)
            if answer.status_code == 200:
                return dict(answer.json())
            last = answer.text
        except requests.RequestException as error:
            last = str(error)
        time.sleep(0.5)
    pytest.fail(f"{url}/ready did not turn green within {timeout:.0f} s: {last[:500]}")


def test_it_runs_unprivileged_on_a_read_only_root(container: Running) -> None:
    assert run_engine("exec", container.name, "id", "-u").stdout.strip() == str(UID)
    refused = run_engine("exec", container.name, "touch", "/opt/venv/written", check=False)
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr
    inspected = run_engine(
        "inspect", container.name, "--format", "{{.HostConfig.ReadonlyRootfs}}"
    ).stdout.strip()
    assert inspected == "true"
    status = run_engine("exec", container.name, "cat", "/proc/1/status").stdout
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    assert int(fields["CapEff"].strip(), 16) == 0 and fields["NoNewPrivs"].strip() == "1"


def test_it_loads_the_champion_and_answers_as_in_process(
    container: Running, registry: Registry
) -> None:
    import mlflow

    from healthpredict.serving.fastpath import records_frame

    ready = _wait_ready(container.url)
    assert ready["model_version"] == "1" and ready["fast_path"] is True
    answer = requests.post(
        f"{container.url}/predict",
        json=EXAMPLE_ENCOUNTER,
        headers={"X-API-Key": API_KEY},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    mlflow.set_tracking_uri(registry.server.url)
    pipeline = mlflow.sklearn.load_model(f"models:/{MODEL}@champion")
    expected = pipeline.predict_proba(records_frame([EXAMPLE_ENCOUNTER]))[0, 1]
    assert answer.json()["probability"] == pytest.approx(expected, abs=1e-9)
    metrics = requests.get(f"{container.url}/metrics", timeout=10)
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'healthpredict_requests_total{endpoint="/predict"' in metrics.text
    assert (
        requests.post(f"{container.url}/predict", json=EXAMPLE_ENCOUNTER, timeout=10).status_code
        == 401
    )


def test_its_own_healthcheck_passes(container: Running) -> None:
    _wait_ready(container.url)
    declared = run_engine("inspect", container.name, "--format", "{{json .Config.Healthcheck}}")
    assert "/health" in declared.stdout
    assert run_engine("healthcheck", "run", container.name, check=False).returncode == 0


def test_sigterm_flushes_the_prediction_log_and_exits_0(container: Running) -> None:
    _wait_ready(container.url)
    started = time.monotonic()
    run_engine("stop", "--time", "30", container.name)  # SIGTERM, SIGKILL after 30 s
    stopped_in = time.monotonic() - started
    code = run_engine("inspect", container.name, "--format", "{{.State.ExitCode}}").stdout
    assert code.strip() == "0" and stopped_in < 30
    store = volume_path(container.volume) / "monitoring.db"
    with sqlite3.connect(store) as connection:
        logged = connection.execute("SELECT count(*) FROM predictions").fetchone()[0]
    assert logged >= 1  # the /predict above, written by the flush on shutdown
