"""The delivery section: build the service image, push it, roll it out and smoke-test it
(docs/orchestration_and_delivery.md); every field is HEALTHPREDICT_DELIVERY_<NAME>."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from healthpredict.settings.sections import ENV_PREFIX, _Section


class DeliverySettings(_Section):
    """A delivery: image, registry, cluster, rollout and smoke test."""

    model_config = SettingsConfigDict(env_prefix=f"{ENV_PREFIX}DELIVERY_")

    # No defaults for the registry or the live endpoint: a delivery to a guessed account or
    # URL is refused before anything is built.
    dry_run: bool = Field(
        default=False,
        description="Record the docker/kubectl/aws commands a delivery would run in the journal "
        "instead of running them (the registry and the smoke test are still real).",
    )
    cluster_dry_run: bool = Field(
        default=False,
        description="Record only the kubectl commands in the journal (revision, pull Secret, "
        "rollout, wait, rollback): the image is built, pushed and its digest checked for real. "
        "For a machine with a container engine and a registry but no cluster.",
    )
    journal_file: Path | None = Field(
        default=None,
        description="JSON-lines journal of every delivery step and command; default "
        "<data_dir>/delivery/journal.jsonl.",
    )
    docker_command: str = Field(
        default="docker", description="How to call docker (split like a shell would)."
    )
    kubectl_command: str = Field(
        default="kubectl",
        description="How to call kubectl (split like a shell would, e.g. 'minikube kubectl --').",
    )
    aws_command: str = Field(
        default="aws", description="How to call the AWS CLI (split like a shell would)."
    )
    registry: str | None = Field(
        default=None,
        description="Image registry host (<account>.dkr.ecr.<region>.amazonaws.com); required "
        "to deliver.",
    )
    repository: str = Field(
        default="healthpredict", description="Image repository of the service in the registry."
    )
    registry_login: Literal["ecr", "password", "none"] = Field(
        default="ecr",
        description="How to log in to the registry: 'ecr' (`aws ecr get-login-password`; the "
        "tag is looked up with `aws ecr describe-images`), 'password' (the _USERNAME and "
        "_PASSWORD below) or 'none'; with the last two the tag and its digest are read from the "
        "registry's HTTP API.",
    )
    registry_username: str | None = Field(
        default=None,
        description="Registry user when HEALTHPREDICT_DELIVERY_REGISTRY_LOGIN=password.",
    )
    registry_password: SecretStr | None = Field(
        default=None,
        description="Registry password or token when HEALTHPREDICT_DELIVERY_REGISTRY_LOGIN="
        "password; given to docker login on stdin and to the registry's API in a header, never "
        "in an argument or the journal.",
    )
    registry_insecure: bool = Field(
        default=False,
        description="Plain HTTP to the registry, no TLS (podman: --tls-verify=false); refused "
        "unless the registry is on loopback (127.0.0.1, localhost, [::1]).",
    )
    aws_region: str | None = Field(
        default=None, description="Region of the registry; default: the AWS CLI's configuration."
    )
    image_tag: str | None = Field(
        default=None,
        description="Image tag a delivery ships when its trigger names none (a model-only "
        "release keeps the image that is deployed).",
    )
    dockerfile: Path = Field(
        default=Path("deploy/docker/Dockerfile.service"), description="Dockerfile of the service."
    )
    build_context: Path = Field(
        default=Path("."), description="Build context of the service image (the repository)."
    )
    base_image: str | None = Field(
        default=None,
        description="Base image the build passes as PYTHON_IMAGE; default: the Dockerfile's "
        "pinned upstream tag. Where that cannot be pulled, the stand-in `healthpredict images "
        "build` makes (localhost/healthpredict-standin/python:3.11-bookworm).",
    )
    build_host_sources: bool = Field(
        default=False,
        description="Mount the machine's package sources (apt sources and settings, pip's index, "
        "CA bundle) into the build, for the build only; podman only (docker build cannot mount).",
    )
    kube_context: str | None = Field(
        default=None, description="kubectl context; default: the current context."
    )
    namespace: str = Field(
        default="healthpredict", description="Kubernetes namespace of the service."
    )
    deployment: str = Field(
        default="healthpredict", description="Kubernetes Deployment of the service."
    )
    container: str = Field(
        default="service", description="Container of the service in that Deployment."
    )
    pull_secret: str | None = Field(
        default=None,
        description="docker-registry Secret the rollout refreshes from the registry login first "
        "(e.g. ecr-pull for Kind on the EC2 host, whose nodes cannot use the instance role).",
    )
    model_version_env: str = Field(
        default="HEALTHPREDICT_MODEL_VERSION",
        description="Container environment variable that pins the model version the service "
        "loads; the rollout sets it.",
    )
    command_timeout_seconds: float = Field(
        default=120.0, gt=0.0, description="Longest a push or kubectl command may run."
    )
    build_timeout_seconds: float = Field(
        default=1800.0, gt=0.0, description="Longest an image build may run."
    )
    rollout_timeout_seconds: float = Field(
        default=300.0,
        gt=0.0,
        description="How long a rollout may take to become ready before it is rolled back.",
    )
    service_url: str | None = Field(
        default=None,
        description="Live endpoint the smoke test calls after a rollout; required to deliver.",
    )
    smoke_timeout_seconds: float = Field(
        default=120.0, gt=0.0, description="How long the smoke test waits for /ready."
    )
    smoke_example: Path | None = Field(
        default=None,
        description="Encounter JSON the smoke test posts to /predict; default: the packaged "
        "example (the same as examples/encounter.json).",
    )
