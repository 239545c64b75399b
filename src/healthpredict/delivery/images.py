"""Build the project's images from their own Dockerfiles, with the machine's container engine.

The Dockerfiles are used unchanged except for their base image, a build argument whose default
stays the exact upstream tag. Where that tag cannot be pulled (no registry reachable, as on the
machines this project is built on), the image is built on a stand-in made from Debian's own
packages (:mod:`healthpredict.delivery.standins`). The engine, and how a build gets the
machine's package sources without keeping them, are :mod:`healthpredict.delivery.engine`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from healthpredict.delivery import engine, standins
from healthpredict.delivery.engine import DOCKER_DIR, ROOT, Built

SERVICE_DOCKERFILE = DOCKER_DIR / "Dockerfile.service"
AIRFLOW_DOCKERFILE = DOCKER_DIR / "Dockerfile.airflow"
SERVICE_IMAGE = "localhost/healthpredict-service"
AIRFLOW_IMAGE = "localhost/healthpredict-airflow"


def build_service_image(tag: str = "0.1.0") -> Built:
    """The prediction service's image (it also runs the compose stack's MLflow server)."""
    base = _base("PYTHON_IMAGE", SERVICE_DOCKERFILE, standins.python)
    arguments = {"PYTHON_IMAGE": base}
    return engine.build_image(SERVICE_DOCKERFILE, f"{SERVICE_IMAGE}:{tag}", ROOT, arguments, base)


def build_airflow_image(tag: str = "0.1.0") -> Built:
    """The image of Airflow's api-server, scheduler and dag-processor, with the project."""
    base = _base("AIRFLOW_IMAGE", AIRFLOW_DOCKERFILE, standins.airflow)
    arguments = {"AIRFLOW_IMAGE": base}
    return engine.build_image(AIRFLOW_DOCKERFILE, f"{AIRFLOW_IMAGE}:{tag}", ROOT, arguments, base)


def build_images(tag: str = "0.1.0") -> list[Built]:
    """Both project images, one after the other (each build uses every core it can)."""
    return [build_service_image(tag), build_airflow_image(tag)]


def _base(argument: str, dockerfile: Path, standin: Callable[[], str]) -> str:
    """The upstream base if it is there or can be pulled, else its stand-in."""
    upstream = engine.base_default(dockerfile, argument)
    return upstream if engine.available(upstream) else standin()
