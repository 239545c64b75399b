"""Bring the compose stack up and down with the machine's engine, and wait until it is healthy.

``docker compose`` where a Docker engine answers, else ``podman-compose`` (PyPI). Every image is
built first, one at a time, by :mod:`healthpredict.delivery.images` (compose would build the
four Airflow services' image four times at once); ``up --build`` then finds each in the layer
cache. Where the upstream images cannot be pulled, ``compose.standin.yaml`` is added on top of
``compose.yaml`` (see that file).

Under podman the order is this module's own as well: podman-compose before podman 4.6 starts
a service without waiting for its dependencies to be healthy, podman 4.3 cannot start a
container whose dependency has dependencies of its own ("not found in input list"), and podman
runs health checks on a timer only where systemd is there to keep one. So the services are
started level by level in the order of their ``depends_on`` (``up --no-deps`` per level), and
before the next level each health check is run here (``podman healthcheck run``, what that
timer would do) until every service of the level is healthy and every one-shot service has
exited 0: the conditions compose.yaml states, enforced. With Docker, ``docker compose up
--wait`` does all of it.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from healthpredict.delivery import engine, images, standins
from healthpredict.delivery.engine import ROOT, ImageError

COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
STANDIN_FILE = COMPOSE_DIR / "compose.standin.yaml"
POSTGRES_UPSTREAM = "postgres:16.9-bookworm"
PROJECT_LABEL = "com.docker.compose.project"
COMPOSE_TIMEOUT_SECONDS = 1800.0


class StackError(ImageError):
    """The stack did not come up healthy, or did not go away."""


@dataclass(frozen=True)
class Stack:
    """One compose project: its name, its .env file and its compose files, in order."""

    project: str
    env_file: Path
    files: tuple[Path, ...]

    @classmethod
    def for_machine(cls, project: str, env_file: Path, extra: Sequence[Path] = ()) -> Stack:
        """compose.yaml, the stand-ins where the upstream images cannot be pulled, ``extra``."""
        standin = () if engine.available(POSTGRES_UPSTREAM) else (STANDIN_FILE,)
        return cls(project, env_file, (COMPOSE_FILE, *standin, *extra))

    @property
    def image_tag(self) -> str:
        """The project images' tag compose runs: the .env file's HEALTHPREDICT_IMAGE_TAG."""
        for line in self.env_file.read_text().splitlines():
            name, _, value = line.partition("=")
            if name.strip() == "HEALTHPREDICT_IMAGE_TAG" and value.strip():
                return value.strip()
        return "0.1.0"  # compose.yaml's default

    @property
    def uses_standins(self) -> bool:
        """Whether the stand-in override is among the files."""
        return STANDIN_FILE in self.files

    def compose(self, *argv: str) -> list[str]:
        """A compose command line for this project."""
        files = [argument for path in self.files for argument in ("-f", str(path))]
        common = ["-p", self.project, *files, "--env-file", str(self.env_file)]
        command = engine.engine()
        if not engine.is_podman(command):
            return [*command, "compose", *common, *argv]
        build = shlex.join(engine.build_options(command))
        # No pod: each service its own container on the project's network, as with Docker.
        podman = [_podman_compose(), "--in-pod=false", f"--podman-build-args={build}"]
        return [*podman, *common, *argv]


@dataclass(frozen=True)
class Container:
    """One container of the stack, as the engine reports it."""

    name: str
    service: str
    status: str
    exit_code: int
    health: str | None
    one_shot: bool

    @property
    def settled(self) -> bool:
        """Healthy, or (a one-shot set-up) exited 0, or (no health check) running."""
        if self.one_shot:
            return self.status == "exited" and self.exit_code == 0
        if self.health is not None:
            return self.health == "healthy"
        return self.status == "running"


def build(stack: Stack) -> list[engine.Built]:
    """Every image the stack runs, one after the other, tagged as compose runs them."""
    built = images.build_images(stack.image_tag)
    if stack.uses_standins:
        standins.postgres()
        standins.s3()
    return built


def up(stack: Stack, timeout: float = 900.0) -> list[Container]:
    """Build, bring every service up, and wait until all are settled (StackError if not)."""
    build(stack)
    deadline = time.monotonic() + timeout
    if not engine.is_podman(engine.engine()):
        engine.run(stack.compose("up", "-d", "--build", "--wait"), timeout=timeout)
        return wait_settled(stack, deadline)
    config = yaml.safe_load(engine.run(stack.compose("config")))
    for level in start_order(config["services"]):
        engine.run(stack.compose("up", "-d", "--build", "--no-deps", *level), timeout=timeout)
        wait_settled(stack, deadline, services=set(level))
    return wait_settled(stack, deadline)


def start_order(services: dict[str, Any]) -> list[list[str]]:
    """The services in levels: each level depends only on the levels before it.

    Raises:
        StackError: The dependencies form a cycle (compose refuses those too).
    """
    needs = {name: set(service.get("depends_on") or ()) for name, service in services.items()}
    levels: list[list[str]] = []
    started: set[str] = set()
    while len(started) < len(needs):
        level = sorted(name for name in needs if name not in started and needs[name] <= started)
        if not level:
            raise StackError(f"depends_on has a cycle among {sorted(set(needs) - started)}")
        levels.append(level)
        started.update(level)
    return levels


def down(stack: Stack) -> None:
    """``down -v``, then check that no container, volume or network of the project is left."""
    engine.run(stack.compose("down", "-v"), timeout=300)
    left = (
        [c.name for c in containers(stack)]
        + _labelled(stack, "volume")
        + _labelled(stack, "network")
    )
    if left:
        raise StackError(f"left after down -v: {left}")


def wait_settled(
    stack: Stack, deadline: float, services: set[str] | None = None, interval: float = 3.0
) -> list[Container]:
    """Run the health checks until every container (of ``services``) is settled, by the
    ``time.monotonic()`` ``deadline``; StackError names the others, with their logs."""
    while True:
        current = [c for c in containers(stack) if services is None or c.service in services]
        _run_health_checks(current)
        current = [c for c in containers(stack) if services is None or c.service in services]
        failed = [c for c in current if c.one_shot and c.status == "exited" and c.exit_code]
        waiting = [c for c in current if not c.settled]
        if failed:
            raise StackError(f"one-shot services failed: {_describe(failed)}\n{_logs(failed)}")
        if current and not waiting:
            return current
        if time.monotonic() > deadline:
            raise StackError(f"not settled in time: {_describe(waiting)}\n{_logs(waiting)}")
        time.sleep(interval)


def containers(stack: Stack) -> list[Container]:
    """The project's containers, stopped ones included."""
    command = engine.engine()
    names = engine.run(
        [
            *command,
            "ps",
            "-a",
            "--filter",
            f"label={PROJECT_LABEL}={stack.project}",
            "--format",
            "{{.Names}}",
        ]
    ).split()
    if not names:
        return []
    return [_container(entry) for entry in json.loads(engine.run([*command, "inspect", *names]))]


def _container(entry: dict[str, Any]) -> Container:
    state = entry["State"]
    health = (state.get("Health") or {}).get("Status") or None
    has_check = bool((entry.get("Config") or {}).get("Healthcheck"))
    restart = ((entry.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name", "")
    return Container(
        name=entry["Name"].lstrip("/"),
        service=entry["Config"]["Labels"].get("com.docker.compose.service", ""),
        status=state["Status"],
        exit_code=int(state.get("ExitCode") or 0),
        health=(health or "starting") if has_check else None,
        # restart: "no" marks a set-up step in compose.yaml; it may inherit its image's
        # HEALTHCHECK (minio-setup runs on the service image) and still only has to exit 0.
        one_shot=restart == "no",
    )


def _run_health_checks(current: list[Container]) -> None:
    """Podman: run each running container's health check once (it records the result)."""
    command = engine.engine()
    if not engine.is_podman(command):
        return  # the Docker daemon runs them on its own timer
    for container in current:
        if container.health is not None and container.status == "running":
            engine.succeeds([*command, "healthcheck", "run", container.name], timeout=60)


def _labelled(stack: Stack, kind: str) -> list[str]:
    """The project's volumes or networks (``kind``), by compose's project label."""
    listed = engine.run(
        [
            *engine.engine(),
            kind,
            "ls",
            "--filter",
            f"label={PROJECT_LABEL}={stack.project}",
            "--format",
            "{{.Name}}",
        ]
    )
    return listed.split()


def _describe(current: list[Container]) -> str:
    return ", ".join(
        f"{c.service} ({c.status}, exit {c.exit_code}, health {c.health})" for c in current
    )


def _logs(current: list[Container], lines: int = 15) -> str:
    command = engine.engine()
    tails = []
    for container in current:
        done = subprocess.run(
            [*command, "logs", "--tail", str(lines), container.name],
            capture_output=True,
            text=True,
            env=engine.engine_environment(),
            timeout=30,
        )
        tails.append(f"--- {container.service}\n{(done.stdout + done.stderr).strip()}")
    return "\n".join(tails)


def _podman_compose() -> str:
    """podman-compose from this environment (a dev dependency), else from the PATH."""
    beside = Path(sys.executable).with_name("podman-compose")
    found = str(beside) if beside.is_file() else shutil.which("podman-compose")
    if found is None:
        raise StackError("podman-compose is not installed (pip install podman-compose)")
    return found
