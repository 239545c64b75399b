"""The Dockerfiles: every one in deploy/docker/ hadolint-clean, pinned and non-root; the
service image multi-stage, healthchecked and free of dev tools.

The Airflow image's own properties are in tests/deploy/test_airflow_image.py.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.deploy.dockerfiles import (
    DOCKER_DIR,
    base_images,
    dockerfiles,
    final_stage,
    hadolint,
    instructions,
    standin_dockerfiles,
)
from tests.deploy.support import ROOT

SERVICE = DOCKER_DIR / "Dockerfile.service"
ALL = pytest.mark.parametrize("dockerfile", dockerfiles(), ids=lambda path: path.name)
# Stand-ins are base images (root, like the upstream ones): linted, but not held to the rules
# of the images the project runs.
LINTED = pytest.mark.parametrize(
    "dockerfile", dockerfiles() + standin_dockerfiles(), ids=lambda path: path.name
)


def test_every_image_of_the_stack_has_a_dockerfile() -> None:
    assert {path.name for path in dockerfiles()} >= {"Dockerfile.service", "Dockerfile.airflow"}


@LINTED
def test_hadolint_finds_nothing_at_any_level(dockerfile: Path) -> None:
    result = subprocess.run(
        [hadolint(), "--failure-threshold", "info", "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@ALL
def test_base_images_are_pinned_to_exact_versions(dockerfile: Path) -> None:
    for image in base_images(dockerfile):
        name, _, tag = image.partition("@")[0].rpartition(":")
        assert name and "$" not in image, f"{image}: every base needs a default"
        # An exact x.y.z version in the tag: never `latest`, nor a moving `3.11-slim`.
        assert tag != "latest" and re.search(r"\d+\.\d+\.\d+", tag), image


@ALL
def test_final_stage_runs_as_a_non_root_user(dockerfile: Path) -> None:
    users = [args for op, args in final_stage(instructions(dockerfile)) if op == "USER"]
    assert users, "the final stage must name its user"
    assert users[-1].split(":")[0] not in {"root", "0"}


def test_service_is_multi_stage_on_an_exactly_pinned_slim_base() -> None:
    steps = instructions(SERVICE)
    base = next(args for op, args in steps if op == "ARG" and args.startswith("PYTHON_IMAGE="))
    assert re.fullmatch(r"PYTHON_IMAGE=python:\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base)
    stages = [args for op, args in steps if op == "FROM"]
    assert len(stages) >= 2 and all(s.startswith("${PYTHON_IMAGE}") for s in stages)
    assert any("--from=build" in args for op, args in steps if op == "COPY")


def test_service_has_a_healthcheck_and_no_dev_tools() -> None:
    final = final_stage(instructions(SERVICE))
    health = [args for op, args in final if op == "HEALTHCHECK"]
    assert health and "/health" in health[0] and "--timeout" in health[0]
    text = SERVICE.read_text()
    # The locked core dependencies only: no extras (dev, hpo, airflow), no compilers.
    assert "-r pyproject.toml" in text and "--extra" not in text and ".[" not in text
    assert not re.search(r"\b(build-essential|gcc|g\+\+|curl|wget|git)\b", text)
    assert [args for op, args in final if op == "ENTRYPOINT"] == ['["healthpredict"]']


def test_build_context_excludes_secrets_and_data() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".env", "data/", ".venv/", ".git/"} <= set(ignored)
