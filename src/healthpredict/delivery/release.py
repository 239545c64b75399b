"""What a delivery ships: one immutable image tag and, optionally, one registered model version.

The release is checked before anything is built or pushed: a tag that is empty, mutable
(``latest``, ``main``...) or not of the strict form below is refused, and so is a delivery
without a registry or a live endpoint to verify it on.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from healthpredict.settings import Settings

# A commit id (7-40 lowercase hex) or a version (v1.2.3, 1.2.3-rc.1): names that always mean
# the same build. ECR tags are immutable too, so a refused name never reaches the registry.
TAG_PATTERN = re.compile(
    r"(?:[0-9a-f]{7,40}|v?\d{1,4}\.\d{1,4}\.\d{1,4}(?:-[0-9a-z]+(?:\.[0-9a-z]+)*)?)"
)
_MUTABLE_TAGS = {"latest", "stable", "main", "master", "dev", "edge", "prod", "production"}
_VERSION_PATTERN = re.compile(r"[1-9]\d{0,8}")


class ReleaseError(ValueError):
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
        ReleaseError: A bad tag or version, or no registry or live endpoint configured.
    """
    tag = check_tag((image_tag or settings.delivery_image_tag or "").strip())
    version = check_model_version((model_version or "").strip() or None)
    if not settings.delivery_registry:
        raise ReleaseError("HEALTHPREDICT_DELIVERY_REGISTRY is not set: nowhere to push the image")
    if not settings.delivery_service_url:
        raise ReleaseError(
            "HEALTHPREDICT_DELIVERY_SERVICE_URL is not set: a rollout that cannot be verified "
            "is not delivered"
        )
    if settings.api_key is None:
        raise ReleaseError("HEALTHPREDICT_API_KEY is not set: the smoke test cannot call /predict")
    image = f"{settings.delivery_registry.rstrip('/')}/{settings.delivery_repository}:{tag}"
    return Release(tag, image, version)
