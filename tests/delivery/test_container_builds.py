"""The parts of the image builds and the compose bring-up that need no engine."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from healthpredict.delivery import engine, images
from healthpredict.delivery.stack import COMPOSE_FILE, StackError, start_order


def test_base_defaults_are_the_exact_upstream_tags() -> None:
    assert engine.base_default(images.SERVICE_DOCKERFILE, "PYTHON_IMAGE") == (
        "python:3.11.13-slim-bookworm"
    )
    # ${AIRFLOW_VERSION} is another argument's default, expanded as the build would.
    airflow = engine.base_default(images.AIRFLOW_DOCKERFILE, "AIRFLOW_IMAGE")
    assert airflow.startswith("apache/airflow:slim-3.") and "$" not in airflow


def test_a_missing_base_argument_is_named(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM scratch\n")
    with pytest.raises(engine.ImageError, match="no ARG PYTHON_IMAGE"):
        engine.base_default(dockerfile, "PYTHON_IMAGE")


def test_the_stack_starts_level_by_level_in_dependency_order() -> None:
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    levels = start_order(services)
    position = {name: index for index, level in enumerate(levels) for name in level}
    assert set(position) == set(services)
    for name, service in services.items():
        for dependency in service.get("depends_on") or {}:
            assert position[dependency] < position[name], (dependency, name)
    assert levels[0] == ["minio", "postgres"]


def test_a_dependency_cycle_is_refused() -> None:
    services = {"a": {"depends_on": ["b"]}, "b": {"depends_on": {"a": {}}}, "c": {}}
    with pytest.raises(StackError, match=r"cycle among \['a', 'b'\]"):
        start_order(services)


def test_build_options_mount_the_package_sources_for_podman_only() -> None:
    assert engine.build_options(["docker"]) == []
    options = engine.build_options(["/usr/bin/podman"], with_ca=False)
    assert options[:2] == ["--format", "docker"]
    assert set(options[2::2]) == {"-v"}
    mounts = options[3::2]
    assert all(mount.endswith(":ro") for mount in mounts)
    assert any(":/etc/apt/sources.list.d:ro" in mount for mount in mounts)
    assert not any("pip.conf" in mount for mount in mounts)


def test_the_stack_builds_the_tag_its_env_file_names(tmp_path: Path) -> None:
    from healthpredict.delivery.stack import Stack

    env_file = tmp_path / ".env"
    env_file.write_text("POSTGRES_PASSWORD=x\nHEALTHPREDICT_IMAGE_TAG=1.2.3\n")
    assert Stack("p", env_file, (COMPOSE_FILE,)).image_tag == "1.2.3"
    env_file.write_text("# HEALTHPREDICT_IMAGE_TAG=9.9.9\nHEALTHPREDICT_IMAGE_TAG=\n")
    assert Stack("p", env_file, (COMPOSE_FILE,)).image_tag == "0.1.0"
