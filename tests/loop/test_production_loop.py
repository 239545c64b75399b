"""The production loop as a deployment runs it, against real servers.

PostgreSQL holds the monitoring store and MLflow's backend, a real ``mlflow server`` the
registry (artifacts in S3 on moto), and the prediction service runs as its own process.
Weekly windows of traffic go through ``/predict/batch``, with a concept drift from the first
(patients without prior stays are now readmitted 60 % of the time). Each window's outcomes arrive a
window later, half through ``POST /outcomes`` and half as a CSV file loaded with
``healthpredict outcomes load``; ``healthpredict monitor`` runs on each window. The drift
policy retrains once the drifted window is labelled, the gate promotes the challenger, the
service swaps to it while a client keeps calling ``/predict`` (no request fails), and the next
window is served by the new champion.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import requests
from sqlalchemy import select
from typer.testing import CliRunner

from healthpredict.cli import app
from healthpredict.loop import streams
from healthpredict.loop.service import RunningService, service_process
from healthpredict.loop.traffic import HttpTraffic
from healthpredict.loop.windows import WindowClock
from healthpredict.monitoring import tables
from healthpredict.monitoring.scenarios import ScenarioSet, inject
from healthpredict.monitoring.store import make_engine
from healthpredict.pipelines.prepare_data import prepare_data
from healthpredict.pipelines.train_and_register import train_and_register
from healthpredict.serving.examples import EXAMPLE_ENCOUNTER
from healthpredict.settings import Settings
from tests.support import real_services as services
from tests.support.airflow_env import environment
from tests.support.real_services import RealServices
from tests.synthetic import make_raw_frame, write_csv

pytestmark = pytest.mark.integration
real_services = services.real_services  # the session fixture, offered to this module
DEPLOYMENT = "hospital-a"
DRIFT = ScenarioSet.model_validate(
    {
        "name": "no-prior-stays-readmitted",
        "scenarios": [
            {
                "name": "no-prior-stays-readmitted",
                "kind": "concept_drift",
                "start": 1,
                "subgroup": {"column": "number_inpatient", "op": "==", "value": 0},
                "positive_rate": 0.6,
            }
        ],
    }
)


@dataclass(frozen=True)
class Deployment:
    """The running deployment and what the test drives it with."""

    env: dict[str, str]
    settings: Settings
    service: RunningService
    traffic: HttpTraffic
    folder: Path


@pytest.fixture(scope="module")
def deployment(
    real_services: RealServices, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """A champion trained through the MLflow server, and the service serving it."""
    folder = tmp_path_factory.mktemp("production-loop")
    source = folder / "diabetic_data.csv"
    write_csv(make_raw_frame(6000, seed=5), str(source))
    # Batches are small here: the sliding window keeps the newest 1,000 encounters, about as
    # many as one and a half windows (the default keeps two windows of the real extract).
    policies = folder / "policies.yaml"
    policies.write_text(
        "drift: {kind: drift, signals: [realised_performance, calibration], cooldown: 1, "
        "window: sliding, window_rows: 1000}\n"
    )
    env = {
        "HEALTHPREDICT_DATA_SOURCE": str(source),
        "HEALTHPREDICT_DATA_DIR": str(folder / "data"),
        "HEALTHPREDICT_ID_SALT": "production-loop-salt",
        "HEALTHPREDICT_MLFLOW_TRACKING_URI": real_services.mlflow.url,
        "HEALTHPREDICT_MLFLOW_ARTIFACT_LOCATION": "mlflow-artifacts:/production-loop",
        "HEALTHPREDICT_EXPERIMENT_NAME": "production-loop",
        "HEALTHPREDICT_MODEL_NAME": "production-loop",
        "HEALTHPREDICT_MONITORING_DB_URL": real_services.database_url("production_loop"),
        "HEALTHPREDICT_DEPLOYMENT": DEPLOYMENT,
        "HEALTHPREDICT_INITIAL_WINDOW_FRACTION": "0.4",
        "HEALTHPREDICT_N_BATCHES": "5",
        "HEALTHPREDICT_POLICIES_FILE": str(policies),
        "HEALTHPREDICT_TEST_FRACTION": "0.2",
        "HEALTHPREDICT_GATE_WINDOW": "batch_001",
        "HEALTHPREDICT_BOOTSTRAP_ROUNDS": "200",
        "HEALTHPREDICT_CV_FOLDS": "3",
        "HEALTHPREDICT_MIN_CHAMPION_ROC_AUC": "0.5",
        "HEALTHPREDICT_LOG_FLUSH_SECONDS": "0.2",
    }
    with environment(env):
        settings = Settings()
        prepare_data(settings)
        train_and_register(settings)
        with service_process(settings, DEPLOYMENT, folder / "service.log", 1.0) as service:
            traffic = HttpTraffic(service.url, service.api_key, service.admin_key)
            yield Deployment(env, settings, service, traffic, folder)


def _batches(settings: Settings) -> list[pd.DataFrame]:
    stream = streams.natural_stream(settings)
    return [
        inject(b, DRIFT, n, settings.training.seed)[0]
        for n, b in enumerate(stream.batches, start=1)
    ]


def _send_outcomes(deployment: Deployment, batch: pd.DataFrame, name: str) -> None:
    """Half through the API, half as a file through the command line."""
    records = streams.outcomes(batch, streams.encounter_id(batch))
    half = len(records) // 2
    deployment.traffic.send_outcomes(records[:half], 500)
    file = deployment.folder / f"{name}.csv"
    vocabulary = {True: "<30", False: "NO"}
    rest = records[half:]
    frame = pd.DataFrame(
        {
            "encounter_id": [r["encounter_id"] for r in rest],
            "readmitted": [vocabulary[r["readmitted"]] for r in rest],
        }
    )
    frame.to_csv(file, index=False)
    for _ in range(2):  # the second load adds nothing
        result = CliRunner().invoke(app, ["outcomes", "load", str(file)], env=deployment.env)
        assert result.exit_code == 0, result.output
    assert "0 recorded" in result.output


def _monitor(deployment: Deployment, window: int) -> str:
    result = CliRunner().invoke(app, ["monitor", "--window", str(window)], env=deployment.env)
    assert result.exit_code == 0, result.output
    return result.output


class Caller:
    """A client calling ``/predict`` in a loop, recording every status and version."""

    def __init__(self, service: RunningService):
        self.service, self.answers = service, []  # type: list[tuple[int, str | None]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Caller:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        session = requests.Session()
        session.headers["X-API-Key"] = self.service.api_key
        while not self._stop.is_set():
            answer = session.post(f"{self.service.url}/predict", json=EXAMPLE_ENCOUNTER, timeout=30)
            version = answer.json().get("model_version") if answer.status_code == 200 else None
            self.answers.append((answer.status_code, version))


def _logged(deployment: Deployment, window: int) -> list[str]:
    """The model version of every prediction logged in ``window``."""
    bounds = WindowClock.from_settings(deployment.settings.monitoring).window(window)
    engine = make_engine(deployment.settings.monitoring_url)
    tables.create_schema(engine)  # the service creates it on its first write, maybe not yet
    log = tables.predictions
    with engine.connect() as connection:
        found = connection.execute(
            select(log.c.model_version).where(
                log.c.deployment == DEPLOYMENT,
                log.c.occurred_at >= bounds.start,
                log.c.occurred_at < bounds.end,
            )
        ).scalars()
        versions = list(found)
    engine.dispose()
    return versions


def _wait_logged(deployment: Deployment, window: int, expected: int) -> None:
    """The service's log writer flushes in the background (every 0.2 s here)."""
    deadline = time.monotonic() + 30
    while len(_logged(deployment, window)) < expected:
        assert time.monotonic() < deadline, f"window {window} was not logged in full"
        time.sleep(0.2)


def _versions_served(deployment: Deployment, window: int) -> set[str]:
    return set(_logged(deployment, window))


def test_the_loop_learns_from_production_and_swaps_without_a_failed_request(
    deployment: Deployment,
) -> None:
    settings = deployment.settings
    clock = WindowClock.from_settings(settings.monitoring)
    patients = streams.natural_stream(settings).patient_numbers()
    batches = _batches(settings)
    promoted: str | None = None
    for number in (1, 2, 3, 4):
        window = clock.window(number)
        batch = batches[number - 1]
        requests_ = streams.requests(batch, streams.encounter_id(batch), window, patients)
        served = deployment.traffic.serve(requests_, 500)
        assert served.accepted == len(batches[number - 1]) and not served.rejected
        _wait_logged(deployment, number, served.accepted)
        assert _versions_served(deployment, number) == {promoted or "1"}
        if number > 1:
            _send_outcomes(deployment, batches[number - 2], f"outcomes_w{number - 1}")
        with Caller(deployment.service) as caller:
            output = _monitor(deployment, number)
            assert f"outcomes of w{number - 1:03d}" in output or number == 1, output
            found = re.search(r"gate: promoted v(\d+)", output)
            if found and promoted is None:
                promoted = found.group(1)
                _wait_until_served(deployment, promoted)
                time.sleep(1.0)  # a few more calls answered by the new champion
        assert caller.answers and all(status == 200 for status, _ in caller.answers)
        if found:
            assert {version for _, version in caller.answers} == {"1", promoted}
            break
    assert promoted is not None, "the drift policy never promoted a challenger"
    nxt = clock.window(number + 1)
    batch = batches[number]
    requests_ = streams.requests(batch, streams.encounter_id(batch), nxt, patients)
    served = deployment.traffic.serve(requests_, 500)
    _wait_logged(deployment, number + 1, served.accepted)
    assert _versions_served(deployment, number + 1) == {promoted}  # served by the new champion
    output = _monitor(deployment, number + 1)
    assert f"v{promoted}: " in output and "off the reference" in output, output


def _wait_until_served(deployment: Deployment, version: str) -> None:
    deadline = time.monotonic() + 60
    while deployment.traffic.serving() != version:
        assert time.monotonic() < deadline, f"the service never swapped to v{version}"
        time.sleep(0.5)


def test_bad_outcomes_and_an_empty_window(deployment: Deployment) -> None:
    bad = deployment.folder / "bad.csv"
    bad.write_text("encounter_id,readmitted\n12,<30\nx,maybe\n")
    result = CliRunner().invoke(app, ["outcomes", "load", str(bad)], env=deployment.env)
    assert result.exit_code == 1
    assert "row 2, encounter_id" in result.output and "row 2, readmitted" in result.output
    batch = _batches(deployment.settings)[0]
    first = streams.outcomes(batch, streams.encounter_id(batch))[0]  # sent by the loop test
    contradiction = {"encounter_id": first["encounter_id"], "readmitted": not first["readmitted"]}
    answer = deployment.traffic.session.post(
        f"{deployment.service.url}/outcomes", json={"outcomes": [contradiction]}, timeout=30
    )
    assert answer.status_code == 409 and "contradict" in answer.json()["detail"]
    again = deployment.traffic.session.post(
        f"{deployment.service.url}/outcomes", json={"outcomes": [first]}, timeout=30
    )
    assert again.status_code == 200 and again.json()["unchanged"] == 1
    empty = _monitor(deployment, 40)
    assert "nothing was served in this window" in empty
