"""The delivery steps: build, push, roll out, wait, roll back. One function per DAG task.

Each step takes and returns plain dicts (a :class:`Release`, a revision snapshot), so XCom
only carries names and numbers. Each is safe to run again: the image is built and pushed only
when the registry does not have the tag yet (tags are immutable there), the rollout is one
patch that changes nothing the second time, and a rollback goes to the revision recorded
before the rollout, so repeating it never flips back to the bad one. A push is checked: the
digest the engine pushed must be the one the registry then holds under the tag.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import tempfile
from pathlib import Path
from typing import Any

from healthpredict.delivery import engine
from healthpredict.delivery.commands import CommandError, CommandRunner, read_journal, tool
from healthpredict.delivery.registry import (
    DIGEST_PATTERN,
    registry_digest,
    registry_host,
    registry_password,
    registry_username,
)
from healthpredict.delivery.release import Release, plan_release
from healthpredict.errors import HealthPredictError
from healthpredict.settings import Settings, get_settings

logger = logging.getLogger(__name__)
# kubectl enforces the rollout timeout itself; the process gets this much longer to report it.
_ROLLOUT_GRACE_SECONDS = 15.0
_REVISION_ANNOTATION = "deployment.kubernetes.io/revision"


class RolloutError(HealthPredictError):
    """The new version did not become ready or did not pass its checks."""


class PushError(HealthPredictError):
    """The registry does not hold what was pushed, or the push reported no digest."""


def plan(image_tag: str | None, model_version: str | None) -> dict[str, Any]:
    """Task: check the release before anything runs; refuses bad tags (ReleaseError)."""
    settings = get_settings()
    runner = CommandRunner.from_settings(settings)
    try:
        release = plan_release(settings, image_tag, model_version)
    except ValueError as error:
        runner.note("refused", image_tag=image_tag, model_version=model_version, reason=str(error))
        raise
    cluster_dry_run = CommandRunner.from_settings(settings, cluster=True).dry_run
    runner.note(
        "planned", **release.to_dict(), dry_run=runner.dry_run, cluster_dry_run=cluster_dry_run
    )
    return release.to_dict()


def build_image(release: dict[str, Any]) -> dict[str, Any]:
    """Task: build the service image, unless the registry already has this tag."""
    settings, runner, target = _context(release)
    if registry_digest(settings, runner, target.tag) is not None:
        return {"built": False, "image": target.image, "reason": "the registry has this tag"}
    runner.run(
        "build", build_command(settings, target), timeout=settings.delivery.build_timeout_seconds
    )
    return {"built": True, "image": target.image}


def build_command(settings: Settings, release: Release) -> list[str]:
    """The build's argument list: the configured base, and on podman the docker image format
    (which keeps the HEALTHCHECK, as Docker does) and, if set, the machine's package sources."""
    docker = tool(settings.delivery.docker_command)
    argv = [
        *docker,
        "build",
        "--file",
        str(settings.delivery.dockerfile),
        "--tag",
        release.image,
        "--label",
        f"org.opencontainers.image.revision={release.tag}",
    ]
    if engine.is_podman(docker):
        argv += ["--format", "docker"]
    if settings.delivery.build_host_sources:
        # The same mounts `healthpredict images build` uses: the layer cache keys on them.
        argv += engine.build_mounts(with_ca=True)
    if settings.delivery.base_image:
        argv += ["--build-arg", f"PYTHON_IMAGE={settings.delivery.base_image}"]
    return [*argv, str(settings.delivery.build_context)]


def push_image(release: dict[str, Any]) -> dict[str, Any]:
    """Task: log in, push the image and check its digest, unless the tag is already there.

    Raises:
        PushError: The registry holds another digest under the tag than the one pushed, or
            none at all.
    """
    settings, runner, target = _context(release)
    held = registry_digest(settings, runner, target.tag)
    if held is not None:
        _check_still_pushed(runner, target, held)
        reason = "the registry has this tag"
        return {"pushed": False, "image": target.image, "digest": held, "reason": reason}
    docker = tool(settings.delivery.docker_command)
    _login(settings, runner, docker)
    pushed = _push(settings, runner, docker, target)
    if pushed is None:  # a dry run: nothing was pushed, so there is nothing to check
        return {"pushed": False, "image": target.image, "digest": None, "reason": "dry run"}
    held = registry_digest(settings, runner, target.tag, step="push-digest")
    runner.note("pushed", image=target.image, digest=pushed, registry_digest=held)
    if held != pushed:
        raise PushError(
            f"the push of {target.image} reported digest {pushed}, but the registry holds "
            f"{held or 'nothing'} under {target.tag}"
        )
    return {"pushed": True, "image": target.image, "digest": pushed}


def _check_still_pushed(runner: CommandRunner, release: Release, held: str) -> None:
    """Fail if this journal's last push of the image reported another digest than the registry
    holds now: a retry after a mismatch finds the tag, and must not ship it unchecked."""
    pushed = [
        event["digest"]
        for event in read_journal(runner.journal)
        if event["event"] == "pushed" and event.get("image") == release.image
    ]
    if pushed and pushed[-1] != held:
        raise PushError(
            f"{release.image} was pushed as {pushed[-1]}, but the registry holds {held} under "
            f"{release.tag}"
        )


def _login(settings: Settings, runner: CommandRunner, docker: list[str]) -> None:
    """``docker login`` with the password on stdin; nothing for a registry without a login."""
    password = registry_password(settings, runner)
    if password is None:
        return
    host = registry_host(settings.delivery.registry or "")
    user = registry_username(settings)
    runner.run(
        "registry-login",
        [*docker, "login", *_tls(settings, docker), "--username", user, "--password-stdin", host],
        stdin=password,
    )


def _push(
    settings: Settings, runner: CommandRunner, docker: list[str], release: Release
) -> str | None:
    """Push; the digest the engine reports (None in a dry run).

    podman writes it to ``--digestfile``; docker prints ``<tag>: digest: sha256:... size: N``.
    """
    with tempfile.TemporaryDirectory(prefix="healthpredict-push-") as folder:
        digest_file = Path(folder) / "digest"
        podman = ["--digestfile", str(digest_file)] if engine.is_podman(docker) else []
        result = runner.run(
            "push", [*docker, "push", *_tls(settings, docker), *podman, release.image]
        )
        if not result.executed:
            return None
        written = digest_file.read_text().strip() if digest_file.is_file() else ""
    printed = re.search(rf"digest: ({DIGEST_PATTERN.pattern})", result.stdout)
    digest = written or (printed.group(1) if printed else "")
    if not DIGEST_PATTERN.fullmatch(digest):
        raise PushError(f"the push of {release.image} reported no digest: cannot check it")
    return digest


def _tls(settings: Settings, docker: list[str]) -> list[str]:
    # podman verifies TLS for every registry unless told; Docker's daemon already speaks plain
    # HTTP to loopback registries (the only ones the insecure setting is allowed for).
    insecure = settings.delivery.registry_insecure and engine.is_podman(docker)
    return ["--tls-verify=false"] if insecure else []


def record_revision(release: dict[str, Any]) -> dict[str, Any]:
    """Task: note the Deployment's revision before the rollout, for an exact rollback."""
    settings, runner, _ = _context(release, cluster=True)
    annotation = _REVISION_ANNOTATION.replace(".", r"\.")
    answer = runner.query(
        "record-revision",
        [
            *_kubectl(settings),
            "get",
            f"deployment/{settings.delivery.deployment}",
            "--output",
            f"jsonpath={{.metadata.annotations.{annotation}}}",
        ],
    )
    # Unknown in a dry run (or for a Deployment never rolled out): a rollback then undoes
    # exactly one revision.
    revision = answer.strip() if answer and answer.strip().isdigit() else None
    return {"deployment": settings.delivery.deployment, "revision": revision}


def roll_out(release: dict[str, Any]) -> dict[str, Any]:
    """Task: point the Deployment at the new image and model version, in one patch."""
    settings, runner, target = _context(release, cluster=True)
    if settings.delivery.pull_secret:
        _refresh_pull_secret(settings, runner, settings.delivery.pull_secret)
    runner.run(
        "roll-out",
        [
            *_kubectl(settings),
            "patch",
            f"deployment/{settings.delivery.deployment}",
            "--type",
            "strategic",
            "--patch",
            json.dumps(rollout_patch(settings, target), sort_keys=True),
        ],
    )
    return {"deployment": settings.delivery.deployment, **target.to_dict()}


def _refresh_pull_secret(settings: Settings, runner: CommandRunner, name: str) -> None:
    """Renew the nodes' registry credentials (ECR logins last 12 hours) before new pods pull.

    The manifest goes to kubectl on stdin, so the password is in no argument list and no
    journal. A cluster step as a whole: a cluster dry run records the password's fetch too.
    """
    password = registry_password(settings, runner) or ""
    manifest = pull_secret_manifest(
        name,
        settings.delivery.namespace,
        registry_host(settings.delivery.registry or ""),
        registry_username(settings),
        password,
    )
    runner.run("pull-secret", [*_kubectl(settings), "apply", "-f", "-"], stdin=json.dumps(manifest))


def pull_secret_manifest(
    name: str, namespace: str, registry: str, username: str, password: str
) -> dict[str, Any]:
    """A ``kubernetes.io/dockerconfigjson`` Secret holding the registry login."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    config = {"auths": {registry: {"username": username, "password": password, "auth": token}}}
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
    container: dict[str, Any] = {"name": settings.delivery.container, "image": release.image}
    if release.model_version is not None:
        container["env"] = [
            {"name": settings.delivery.model_version_env, "value": release.model_version}
        ]
    cause = f"healthpredict delivery: image {release.tag}, model {release.model_version or '-'}"
    return {
        "metadata": {"annotations": {"kubernetes.io/change-cause": cause}},
        "spec": {"template": {"spec": {"containers": [container]}}},
    }


def wait_for_rollout(release: dict[str, Any]) -> dict[str, Any]:
    """Task: wait until every new pod is ready; fail (so the rollback runs) after the timeout."""
    settings, runner, _ = _context(release, cluster=True)
    timeout = settings.delivery.rollout_timeout_seconds
    try:
        _rollout_status(settings, runner, timeout)
    except CommandError as error:
        raise RolloutError(
            f"deployment/{settings.delivery.deployment} did not become ready within "
            f"{timeout:.0f}s: {error}"
        ) from error
    return {"deployment": settings.delivery.deployment, "ready": True}


def roll_back(snapshot: dict[str, Any] | None) -> dict[str, Any]:
    """Task (runs only when a step failed): restore the revision recorded before the rollout.

    Without a snapshot nothing was rolled out (the failure came earlier), so nothing is
    undone: undoing then would revert a release that was fine.
    """
    settings = get_settings()
    runner = CommandRunner.from_settings(settings, cluster=True)
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
            f"deployment/{settings.delivery.deployment}",
            *to_revision,
        ],
    )
    _rollout_status(settings, runner, settings.delivery.rollout_timeout_seconds)
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
            f"deployment/{settings.delivery.deployment}",
            f"--timeout={timeout:.0f}s",
        ],
        timeout=timeout + _ROLLOUT_GRACE_SECONDS,
    )


def _context(
    release: dict[str, Any], cluster: bool = False
) -> tuple[Settings, CommandRunner, Release]:
    settings = get_settings()
    runner = CommandRunner.from_settings(settings, cluster=cluster)
    return settings, runner, Release.from_dict(release)


def _kubectl(settings: Settings) -> list[str]:
    context = (
        ["--context", settings.delivery.kube_context] if settings.delivery.kube_context else []
    )
    return [
        *tool(settings.delivery.kubectl_command),
        *context,
        "--namespace",
        settings.delivery.namespace,
    ]
