"""The Airflow image: the locked Airflow on the project's Python, the package with the extras
the DAGs need, and the paths the compose file mounts.

hadolint, pinning and the non-root user are checked for every Dockerfile in
tests/deploy/test_dockerfile.py.
"""

from __future__ import annotations

import re

import yaml

from tests.deploy.dockerfiles import DOCKER_DIR, arg_defaults, base_images, instructions
from tests.deploy.support import DEPLOY, ROOT

DOCKERFILE = DOCKER_DIR / "Dockerfile.airflow"


def _locked(package: str) -> str:
    match = re.search(
        rf"^{re.escape(package)}==(\S+)$", (ROOT / "requirements/lock.txt").read_text(), re.M
    )
    assert match, f"{package} is not in requirements/lock.txt"
    return match[1]


def test_base_is_the_official_image_of_the_locked_airflow_on_python_3_11() -> None:
    (image,) = base_images(DOCKERFILE)
    locked = _locked("apache-airflow")
    assert re.fullmatch(rf"apache/airflow:(slim-)?{re.escape(locked)}-python3\.11", image), image
    assert arg_defaults(instructions(DOCKERFILE))["AIRFLOW_VERSION"] == locked


def test_installs_the_package_against_the_lock_without_dev_tools() -> None:
    runs = [args for op, args in instructions(DOCKERFILE) if op == "RUN" and "pip install" in args]
    # Dependencies first (code changes keep that layer), then the package alone.
    assert len(runs) == 2
    install, package = runs
    assert "--no-deps" in package and "-c requirements/lock.txt" not in package
    assert "-c requirements/lock.txt" in install
    assert "UV_NO_CACHE=1" in DOCKERFILE.read_text(), "no package cache kept in the image"
    # Airflow is named at the image's version, so the resolver can never replace it.
    assert '"apache-airflow==${AIRFLOW_VERSION}"' in install
    extras_match = re.search(r"\.\[([\w,]+)\]", install)
    assert extras_match, "the package is installed with extras: .[...]"
    extras = set(extras_match[1].split(","))
    assert {"airflow", "hpo", "monitoring"} <= extras and not extras & {"dev", "infra"}


def test_data_dir_matches_the_volume_the_compose_file_mounts() -> None:
    env = dict(
        item.split("=", 1)
        for op, args in instructions(DOCKERFILE)
        if op == "ENV"
        for item in args.split()
    )
    compose = yaml.safe_load((DEPLOY / "compose/compose.yaml").read_text())
    scheduler = compose["services"]["airflow-scheduler"]
    assert scheduler["environment"]["HEALTHPREDICT_DATA_DIR"] == env["HEALTHPREDICT_DATA_DIR"]
    targets = {mount.split(":")[1] for mount in scheduler["volumes"]}
    assert env["HEALTHPREDICT_DATA_DIR"] in targets and "/opt/airflow/dags" in targets
    # Made in the image as the airflow user, so a fresh named volume inherits that owner.
    assert any(
        env["HEALTHPREDICT_DATA_DIR"] in args and "-o 50000" in args
        for op, args in instructions(DOCKERFILE)
        if op == "RUN"
    )
