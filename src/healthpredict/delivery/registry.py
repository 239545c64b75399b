"""The registry that holds a release: what it has under a tag, and how to log in to it.

ECR is asked through the AWS CLI; any other registry through its HTTP API (the Docker Registry
v2 / OCI distribution API), with the anonymous or password login it asks for. A push is checked
against the digest the registry answers.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
from typing import Any

import requests

from healthpredict.delivery.commands import CommandRunner, tool
from healthpredict.errors import HealthPredictError
from healthpredict.settings import Settings

DIGEST_PATTERN = re.compile(r"sha256:[0-9a-f]{64}")
# What the registry may hold under a tag: one image, or an index of images (multi-platform).
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
_REQUEST_TIMEOUT_SECONDS = 30.0


def registry_host(registry: str) -> str:
    """The ``host[:port]`` of a registry setting (``ghcr.io/team`` is ``ghcr.io``)."""
    return registry.split("/", 1)[0]


def is_loopback(hostname: str) -> bool:
    """Whether ``hostname`` names this machine only (localhost, 127.0.0.0/8, ::1)."""
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


class RegistryError(HealthPredictError):
    """The registry could not be asked, or answered something that is not a digest."""


def registry_username(settings: Settings) -> str:
    """The user the registry login names."""
    if settings.delivery.registry_login == "ecr":
        return "AWS"
    return settings.delivery.registry_username or ""


def registry_password(settings: Settings, runner: CommandRunner) -> str | None:
    """The login password, only ever passed on stdin; None when the registry needs no login.

    ECR: a 12-hour password from ``aws ecr get-login-password`` (empty in a dry run).
    """
    login = settings.delivery.registry_login
    if login == "none":
        return None
    if login == "password":
        secret = settings.delivery.registry_password
        return secret.get_secret_value() if secret is not None else ""
    aws = tool(settings.delivery.aws_command)
    result = runner.run("registry-login", [*aws, "ecr", "get-login-password", *_region(settings)])
    return result.stdout.strip()


def registry_digest(
    settings: Settings, runner: CommandRunner, tag: str, step: str = "image-exists"
) -> str | None:
    """The manifest digest the registry holds under ``tag``.

    None when it has no such tag, and in a dry run (unknown: the caller then builds and
    pushes, so a dry run shows every command).

    Raises:
        RegistryError: The registry could not be asked or answered no digest.
    """
    if settings.delivery.registry_login == "ecr":
        return _ecr_digest(settings, runner, tag, step)
    url = manifest_url(settings, tag)
    return runner.ask(step, lambda: manifest_digest(settings, url), url=url)


def manifest_url(settings: Settings, tag: str) -> str:
    """Where the registry's HTTP API answers for the service's ``tag``."""
    registry = (settings.delivery.registry or "").strip().rstrip("/")
    host, _, namespace = registry.partition("/")
    name = "/".join(part for part in (namespace, settings.delivery.repository) if part)
    scheme = "http" if settings.delivery.registry_insecure else "https"
    return f"{scheme}://{host}/v2/{name}/manifests/{tag}"


def manifest_digest(settings: Settings, url: str) -> str | None:
    """``GET`` the manifest at ``url``: its digest, or None when the registry has no such tag.

    The digest is the registry's ``Docker-Content-Digest``, checked against the sha256 of the
    manifest it sent.
    """
    with requests.Session() as session:
        session.headers["Accept"] = ", ".join(MANIFEST_TYPES)
        answer = _get(session, url)
        if answer.status_code == 401:
            session.headers["Authorization"] = _authorization(settings, session, answer)
            answer = _get(session, url)
            if answer.status_code in (401, 403):
                raise _refused(settings, answer)
    if answer.status_code == 404:
        return None
    if answer.status_code != 200:
        raise RegistryError(f"GET {url} answered HTTP {answer.status_code}: {answer.text[:300]}")
    computed = f"sha256:{hashlib.sha256(answer.content).hexdigest()}"
    stated = answer.headers.get("Docker-Content-Digest", computed)
    if stated != computed:
        raise RegistryError(f"{url}: the registry states {stated}, its manifest is {computed}")
    return stated


def _get(session: requests.Session, url: str, **options: Any) -> requests.Response:
    try:
        return session.get(url, timeout=_REQUEST_TIMEOUT_SECONDS, **options)
    except requests.RequestException as error:
        raise RegistryError(f"GET {url}: {type(error).__name__}: {error}") from error


def _authorization(
    settings: Settings, session: requests.Session, refused: requests.Response
) -> str:
    """The Authorization header the registry's challenge asks for: Basic, or a Bearer token
    from its token service (how Docker Hub, GHCR, GitLab or Harbor log in)."""
    scheme, _, rest = refused.headers.get("WWW-Authenticate", "").partition(" ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    login, token = _login(settings), None
    if scheme.lower() == "basic" and login is not None:
        return "Basic " + base64.b64encode(":".join(login).encode()).decode()
    if scheme.lower() == "bearer" and "realm" in params:
        query = {key: params[key] for key in ("service", "scope") if key in params}
        answer = _get(session, params["realm"], params=query, auth=login)
        token = _token(answer)
    if token:
        return f"Bearer {token}"
    raise _refused(settings, refused)


def _token(answer: requests.Response) -> str | None:
    try:
        body = answer.json() if answer.ok else {}
    except ValueError:
        return None
    token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
    return str(token) if token else None


def _refused(settings: Settings, answer: requests.Response) -> RegistryError:
    asked = "login" if _login(settings) else "anonymous request"
    return RegistryError(
        f"{answer.url} refused the {asked} (HTTP {answer.status_code}): check "
        "HEALTHPREDICT_DELIVERY_REGISTRY_LOGIN, _USERNAME and _PASSWORD"
    )


def _login(settings: Settings) -> tuple[str, str] | None:
    secret = settings.delivery.registry_password
    if settings.delivery.registry_login != "password" or secret is None:
        return None
    return registry_username(settings), secret.get_secret_value()


def _ecr_digest(settings: Settings, runner: CommandRunner, tag: str, step: str) -> str | None:
    answer = runner.query(
        step,
        [
            *tool(settings.delivery.aws_command),
            "ecr",
            "describe-images",
            "--repository-name",
            settings.delivery.repository,
            "--image-ids",
            f"imageTag={tag}",
            "--query",
            "imageDetails[0].imageDigest",
            "--output",
            "text",
            *_region(settings),
        ],
    )
    if answer is None:
        return None
    digest = answer.strip()
    if not DIGEST_PATTERN.fullmatch(digest):
        raise RegistryError(f"aws ecr describe-images answered {digest[:200]!r}, not a digest")
    return digest


def _region(settings: Settings) -> list[str]:
    return ["--region", settings.delivery.aws_region] if settings.delivery.aws_region else []
