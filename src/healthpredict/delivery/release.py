"""What a delivery ships, and the registry that holds it.

The release is one immutable image tag and, optionally, one registered model version. It is
checked before anything is built or pushed: a tag that is empty, mutable (``latest``,
``main``...) or not of the strict form below is refused, and so is a delivery without a
registry or a live endpoint to verify it on, or with a registry setting that cannot work (an
ECR login for a registry that is not ECR, plain HTTP to a registry off loopback).

What the registry holds, and logging in to it: :mod:`healthpredict.delivery.registry`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from healthpredict.delivery import engine
from healthpredict.delivery.commands import tool
from healthpredict.delivery.registry import is_loopback, registry_host
from healthpredict.errors import HealthPredictError
from healthpredict.settings import Settings

# A commit id (7-40 lowercase hex) or a version (v1.2.3, 1.2.3-rc.1): names that always mean
# the same build. ECR tags are immutable too, so a refused name never reaches the registry.
TAG_PATTERN = re.compile(
    r"(?:[0-9a-f]{7,40}|v?\d{1,4}\.\d{1,4}\.\d{1,4}(?:-[0-9a-z]+(?:\.[0-9a-z]+)*)?)"
)
_MUTABLE_TAGS = {"latest", "stable", "main", "master", "dev", "edge", "prod", "production"}
_VERSION_PATTERN = re.compile(r"[1-9]\d{0,8}")
_ECR_HOST = re.compile(r"\d{12}\.dkr\.ecr(?:-fips)?\.[a-z0-9-]+\.amazonaws\.com(?:\.cn)?")


class ReleaseError(HealthPredictError, ValueError):
    """The release is refused before anything runs."""


@dataclass(frozen=True)
class Release:
    """The image and model version one delivery ships (passed between tasks as a dict)."""

    tag: str
    image: str
    model_version: str | None

    def to_dict(self) -> dict[str, Any]:
        """Plain data, for XCom."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Release:
        """The release a previous task returned."""
        return cls(str(data["tag"]), str(data["image"]), data.get("model_version"))


def check_tag(tag: str) -> str:
    """Return ``tag`` if it names one immutable build; raise ReleaseError otherwise."""
    if not tag:
        raise ReleaseError("no image tag given: a delivery needs an immutable tag (a commit id)")
    if tag.lower() in _MUTABLE_TAGS:
        raise ReleaseError(f"image tag {tag!r} is mutable: it names a different build over time")
    if not TAG_PATTERN.fullmatch(tag):
        raise ReleaseError(
            f"image tag {tag!r} is not a commit id (7-40 lowercase hex) or a version like "
            "v1.2.3: refused before anything is built or pushed"
        )
    return tag


def check_model_version(version: str | None) -> str | None:
    """A registered version number, or None for an image-only release."""
    if version is None or version == "":
        return None
    if not _VERSION_PATTERN.fullmatch(version):
        raise ReleaseError(f"model version {version!r} is not a registered version number")
    return version


def plan_release(settings: Settings, image_tag: str | None, model_version: str | None) -> Release:
    """Check everything a delivery needs before its first command; return the release.

    Raises:
        ReleaseError: A bad tag or version, no registry or live endpoint configured, or
            registry or build settings that cannot work together.
    """
    tag = check_tag((image_tag or settings.delivery.image_tag or "").strip())
    version = check_model_version((model_version or "").strip() or None)
    registry = check_registry(settings)
    check_build(settings)
    if not settings.delivery.service_url:
        raise ReleaseError(
            "HEALTHPREDICT_DELIVERY_SERVICE_URL is not set: a rollout that cannot be verified "
            "is not delivered"
        )
    if settings.serving.api_key is None:
        raise ReleaseError("HEALTHPREDICT_API_KEY is not set: the smoke test cannot call /predict")
    return Release(tag, f"{registry}/{settings.delivery.repository}:{tag}", version)


def check_registry(settings: Settings) -> str:
    """The registry setting, if its login and transport can work; raise ReleaseError otherwise."""
    registry = (settings.delivery.registry or "").strip().rstrip("/")
    if not registry:
        raise ReleaseError("HEALTHPREDICT_DELIVERY_REGISTRY is not set: nowhere to push the image")
    host = registry_host(registry)
    name = urlsplit(f"//{host}").hostname or ""
    login = settings.delivery.registry_login
    if login == "ecr" and not _ECR_HOST.fullmatch(name):
        raise ReleaseError(
            f"registry {host} is not an ECR registry (<account>.dkr.ecr.<region>.amazonaws.com): "
            "set HEALTHPREDICT_DELIVERY_REGISTRY_LOGIN to 'password' or 'none'"
        )
    if login == "password" and not (
        settings.delivery.registry_username and settings.delivery.registry_password
    ):
        raise ReleaseError(
            "HEALTHPREDICT_DELIVERY_REGISTRY_LOGIN=password needs "
            "HEALTHPREDICT_DELIVERY_REGISTRY_USERNAME and HEALTHPREDICT_DELIVERY_REGISTRY_PASSWORD"
        )
    if login == "none" and settings.delivery.pull_secret:
        raise ReleaseError(
            "HEALTHPREDICT_DELIVERY_PULL_SECRET needs a registry login to put in the Secret: "
            "unset it, or set HEALTHPREDICT_DELIVERY_REGISTRY_LOGIN"
        )
    if settings.delivery.registry_insecure and not is_loopback(name):
        raise ReleaseError(
            f"HEALTHPREDICT_DELIVERY_REGISTRY_INSECURE is refused for {host}: plain HTTP would "
            "carry the image and the login unprotected; it is for a registry on loopback only"
        )
    return registry


def check_build(settings: Settings) -> None:
    """Raise ReleaseError when the build settings ask for what the engine cannot do."""
    docker = tool(settings.delivery.docker_command)
    if settings.delivery.build_host_sources and not engine.is_podman(docker):
        raise ReleaseError(
            "HEALTHPREDICT_DELIVERY_BUILD_HOST_SOURCES needs podman (`docker build` cannot mount "
            "the machine's package sources): set HEALTHPREDICT_DELIVERY_DOCKER_COMMAND=podman"
        )
