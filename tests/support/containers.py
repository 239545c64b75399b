"""Fixtures of the container tests (tests/deploy, tests/delivery; marker ``containers``): the
service image built for real, a registry to load from.

The image is built with the machine's engine (``healthpredict.delivery.images``: podman here,
on a stand-in base built from Debian's packages, since no registry can be pulled from). The
champion is trained on a synthetic extract and registered through a real ``mlflow server`` on
the host, with its artifacts proxied by the server, so a container reaches the model over HTTP
only (``host.containers.internal``). Without podman or Docker these tests skip, and fail under
CI (``.ci/run`` installs podman).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from healthpredict.delivery import engine, images
from tests.support.airflow_env import environment
from tests.support.real_services import MlflowServer
from tests.synthetic import make_raw_frame, write_csv

HOST_FROM_CONTAINER = "host.containers.internal"
MODEL = "container-model"


def engine_or_skip() -> list[str]:
    """The container engine, or skip (fail under CI) when there is none."""
    try:
        return engine.engine()
    except engine.ImageError as error:
        if os.environ.get("CI"):
            pytest.fail(str(error))
        pytest.skip(str(error))


def run_engine(
    *argv: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """One engine command (podman with the machine's runtime settings)."""
    done = subprocess.run(
        [*engine_or_skip(), *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=engine.engine_environment(),
    )
    if check and done.returncode != 0:
        pytest.fail(f"{' '.join(argv[:2])} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done


@pytest.fixture(scope="session")
def service_image() -> engine.Built:
    """The service image, tagged as the Kind overlay pins it (a rebuild is cached layers)."""
    engine_or_skip()
    return images.build_service_image("0.1.0")


@dataclass(frozen=True)
class Registry:
    """A trained champion behind a real MLflow server the containers can reach."""

    server: MlflowServer
    env: dict[str, str]

    @property
    def url_from_container(self) -> str:
        """The tracking URI as a container on the default bridge sees the host."""
        return f"http://{HOST_FROM_CONTAINER}:{self.server.port}"


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """``mlflow server`` on the host (every interface: containers come through the bridge)."""
    from healthpredict.pipelines.prepare_data import prepare_data
    from healthpredict.pipelines.train_and_register import train_and_register
    from healthpredict.settings import Settings

    folder = tmp_path_factory.mktemp("container-registry")
    server = MlflowServer.for_containers(folder)
    server.start()
    source = folder / "diabetic_data.csv"
    write_csv(make_raw_frame(2500, seed=11), str(source))
    env = {
        "HEALTHPREDICT_DATA_SOURCE": str(source),
        "HEALTHPREDICT_DATA_DIR": str(folder / "data"),
        "HEALTHPREDICT_MLFLOW_TRACKING_URI": server.url,
        "HEALTHPREDICT_MLFLOW_ARTIFACT_LOCATION": f"mlflow-artifacts:/{MODEL}",
        "HEALTHPREDICT_EXPERIMENT_NAME": MODEL,
        "HEALTHPREDICT_MODEL_NAME": MODEL,
        "HEALTHPREDICT_MIN_CHAMPION_ROC_AUC": "0.5",
        "HEALTHPREDICT_CV_FOLDS": "3",
        "HEALTHPREDICT_BOOTSTRAP_ROUNDS": "50",
    }
    try:
        with environment(env):
            settings = Settings()
            prepare_data(settings)
            train_and_register(settings)
        yield Registry(server, env)
    finally:
        server.stop()


def kustomize_or_skip() -> list[str]:
    """A kustomize that builds the overlays (what .ci/run installs), or skip."""
    from tests.deploy.kustomize import kustomize_command

    command = kustomize_command()
    if command is None:
        message = "no kustomize that builds the overlays (.ci/run installs one)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return list(command)


def volume_path(name: str) -> Path:
    """Where a named volume's files are on the host."""
    mount = run_engine("volume", "inspect", name, "--format", "{{.Mountpoint}}").stdout.strip()
    return Path(mount)


def engine_name() -> str:
    """podman or docker."""
    return Path(shutil.which(engine_or_skip()[0]) or "").name
