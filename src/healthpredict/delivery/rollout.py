"""The delivery steps: build, push, roll out, wait, roll back. One function per DAG task.

Each step takes and returns plain dicts (a :class:`Release`, a revision snapshot), so XCom
only carries names and numbers. Each is safe to run again: the image is built and pushed only
when the registry does not have the tag yet (tags are immutable there), the rollout is one
patch that changes nothing the second time, and a rollback goes to the revision recorded
before the rollout, so repeating it never flips back to the bad one.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

from healthpredict.delivery.commands import CommandRunner, tool
from healthpredict.delivery.release import Release, plan_release
from healthpredict.settings import Settings, get_settings

logger = logging.getLogger(__name__)
# kubectl enforces the rollout timeout itself; the process gets this much longer to report it.
_ROLLOUT_GRACE_SECONDS = 15.0
_REVISION_ANNOTATION = "deployment.kubernetes.io/revision"


class RolloutError(RuntimeError):
    """The new version did not become ready or did not pass its checks."""


def plan(image_tag: str | None, model_version: str | None) -> dict[str, Any]:
    """Task: check the release before anything runs; refuses bad tags (ReleaseError)."""
    settings = get_settings()
    runner = CommandRunner.from_settings(settings)
    try:
        release = plan_release(settings, image_tag, model_version)
    except ValueError as error:
        runner.note("refused", image_tag=image_tag, model_version=model_version, reason=str(error))
        raise
    runner.note("planned", **release.to_dict(), dry_run=runner.dry_run)
    return release.to_dict()


def build_image(release: dict[str, Any]) -> dict[str, Any]:
    """Task: build the service image, unless the registry already has this tag."""
    settings, runner, target = _context(release)
    if _image_exists(settings, runner, target):
        return {"built": False, "image": target.image, "reason": "the registry has this tag"}
    docker = tool(settings.delivery_docker_command)
    runner.run(
        "build",
        [
            *docker,
            "build",
            "--file",
            str(settings.delivery_dockerfile),
            "--tag",
            target.image,
            "--label",
            f"org.opencontainers.image.revision={target.tag}",
            str(settings.delivery_build_context),
        ],
        timeout=settings.delivery_build_timeout_seconds,
    )
    return {"built": True, "image": target.image}


def push_image(release: dict[str, Any]) -> dict[str, Any]:
    """Task: log in to the registry and push the image, unless the tag is already there."""
    settings, runner, target = _context(release)
    if _image_exists(settings, runner, target):
        return {"pushed": False, "image": target.image, "reason": "the registry has this tag"}
    docker = tool(settings.delivery_docker_command)
    registry = settings.delivery_registry or ""
    runner.run(
        "registry-login",
        [*docker, "login", "--username", "AWS", "--password-stdin", registry],
        stdin=_registry_password(settings, runner),
    )
    runner.run("push", [*docker, "push", target.image])
    return {"pushed": True, "image": target.image}


def record_revision(release: dict[str, Any]) -> dict[str, Any]:
    """Task: note the Deployment's revision before the rollout, for an exact rollback."""
    settings, runner, _ = _context(release)
    annotation = _REVISION_ANNOTATION.replace(".", r"\.")
    answer = runner.query(
        "record-revision",
        [
            *_kubectl(settings),
            "get",
            f"deployment/{settings.delivery_deployment}",
            "--output",
            f"jsonpath={{.metadata.annotations.{annotation}}}",
        ],
    )
    # Unknown in a dry run (or for a Deployment never rolled out): a rollback then undoes
    # exactly one revision.
    revision = answer.strip() if answer and answer.strip().isdigit() else None
    return {"deployment": settings.delivery_deployment, "revision": revision}


def roll_out(release: dict[str, Any]) -> dict[str, Any]:
    """Task: point the Deployment at the new image and model version, in one patch."""
    settings, runner, target = _context(release)
    if settings.delivery_pull_secret:
        _refresh_pull_secret(settings, runner, settings.delivery_pull_secret)
    runner.run(
        "roll-out",
        [
            *_kubectl(settings),
            "patch",
            f"deployment/{settings.delivery_deployment}",
            "--type",
            "strategic",
            "--patch",
            json.dumps(rollout_patch(settings, target), sort_keys=True),
        ],
    )
    return {"deployment": settings.delivery_deployment, **target.to_dict()}


def _refresh_pull_secret(settings: Settings, runner: CommandRunner, name: str) -> None:
    """Renew the nodes' registry credentials (ECR logins last 12 hours) before new pods pull.

    The manifest goes to kubectl on stdin, so the password is in no argument list and no
    journal.
    """
    password = _registry_password(settings, runner)
    manifest = pull_secret_manifest(
        name, settings.delivery_namespace, settings.delivery_registry or "", password
    )
    runner.run("pull-secret", [*_kubectl(settings), "apply", "-f", "-"], stdin=json.dumps(manifest))


def pull_secret_manifest(name: str, namespace: str, registry: str, password: str) -> dict[str, Any]:
    """A ``kubernetes.io/dockerconfigjson`` Secret holding the registry login."""
    token = base64.b64encode(f"AWS:{password}".encode()).decode()
    config = {"auths": {registry: {"username": "AWS", "password": password, "auth": token}}}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()},
    }


def rollout_patch(settings: Settings, release: Release) -> dict[str, Any]:
    """The strategic-merge patch of a rollout: image, pinned model version, change cause.

    One patch is one new revision: image and model version change together or not at all,
    and applying it again changes nothing.
    """
    container: dict[str, Any] = {"name": settings.delivery_container, "image": release.image}
    if release.model_version is not None:
        container["env"] = [
            {"name": settings.delivery_model_version_env, "value": release.model_version}
        ]
    cause = f"healthpredict delivery: image {release.tag}, model {release.model_version or '-'}"
    return {
        "metadata": {"annotations": {"kubernetes.io/change-cause": cause}},
        "spec": {"template": {"spec": {"containers": [container]}}},
    }


def wait_for_rollout(release: dict[str, Any]) -> dict[str, Any]:
    """Task: wait until every new pod is ready; fail (so the rollback runs) after the timeout."""
    settings, runner, _ = _context(release)
    timeout = settings.delivery_rollout_timeout_seconds
    try:
        _rollout_status(settings, runner, timeout)
    except RuntimeError as error:
        raise RolloutError(
            f"deployment/{settings.delivery_deployment} did not become ready within "
            f"{timeout:.0f}s: {error}"
        ) from error
    return {"deployment": settings.delivery_deployment, "ready": True}


def roll_back(snapshot: dict[str, Any] | None) -> dict[str, Any]:
    """Task (runs only when a step failed): restore the revision recorded before the rollout.

    Without a snapshot nothing was rolled out (the failure came earlier), so nothing is
    undone: undoing then would revert a release that was fine.
    """
    settings = get_settings()
    runner = CommandRunner.from_settings(settings)
    if snapshot is None:
        runner.note("rollback", rolled_back=False, reason="nothing was rolled out")
        return {"rolled_back": False, "reason": "nothing was rolled out"}
    revision = snapshot.get("revision")
    to_revision = [f"--to-revision={revision}"] if revision else []
    runner.run(
        "roll-back",
        [
            *_kubectl(settings),
            "rollout",
            "undo",
            f"deployment/{settings.delivery_deployment}",
            *to_revision,
        ],
    )
    _rollout_status(settings, runner, settings.delivery_rollout_timeout_seconds)
    runner.note("rollback", rolled_back=True, revision=revision)
    return {"rolled_back": True, "revision": revision}


def record_delivery(release: dict[str, Any], promoted: dict[str, Any]) -> dict[str, Any]:
    """Task: journal the completed delivery (image, model version, champion) and return it."""
    settings = get_settings()
    record = {**Release.from_dict(release).to_dict(), "champion": promoted.get("champion")}
    CommandRunner.from_settings(settings).note("delivered", **record)
    return record


def _rollout_status(settings: Settings, runner: CommandRunner, timeout: float) -> None:
    runner.run(
        "rollout-status",
        [
            *_kubectl(settings),
            "rollout",
            "status",
            f"deployment/{settings.delivery_deployment}",
            f"--timeout={timeout:.0f}s",
        ],
        timeout=timeout + _ROLLOUT_GRACE_SECONDS,
    )


def _context(release: dict[str, Any]) -> tuple[Settings, CommandRunner, Release]:
    settings = get_settings()
    return settings, CommandRunner.from_settings(settings), Release.from_dict(release)


def _kubectl(settings: Settings) -> list[str]:
    context = (
        ["--context", settings.delivery_kube_context] if settings.delivery_kube_context else []
    )
    return [
        *tool(settings.delivery_kubectl_command),
        *context,
        "--namespace",
        settings.delivery_namespace,
    ]


def _registry_password(settings: Settings, runner: CommandRunner) -> str:
    """A 12-hour ECR login password (empty in a dry run); only ever passed on stdin."""
    aws = tool(settings.delivery_aws_command)
    login = runner.run("registry-login", [*aws, "ecr", "get-login-password", *_region(settings)])
    return login.stdout.strip()


def _region(settings: Settings) -> list[str]:
    return ["--region", settings.delivery_aws_region] if settings.delivery_aws_region else []


def _image_exists(settings: Settings, runner: CommandRunner, release: Release) -> bool:
    """Whether the registry has the tag (False when unknown: then build and push)."""
    answer = runner.query(
        "image-exists",
        [
            *tool(settings.delivery_aws_command),
            "ecr",
            "describe-images",
            "--repository-name",
            settings.delivery_repository,
            "--image-ids",
            f"imageTag={release.tag}",
            *_region(settings),
        ],
    )
    return answer is not None
