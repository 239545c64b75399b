"""The machine's container engine, and image builds that use the machine's package sources.

Docker where an engine answers, else podman (run with runc and explicit ulimits: see
``deploy/docker/standin/containers.conf``). The machine's package sources (apt sources and
settings, pip's index and CA bundle) are read from the machine's own configuration when a
build runs and mounted into it for that build only: nothing of them is copied into an image
or written into this repository.
"""

from __future__ import annotations

import configparser
import functools
import os
import re
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from healthpredict.errors import HealthPredictError

ROOT = Path(__file__).resolve().parents[3]
DOCKER_DIR = ROOT / "deploy" / "docker"
STANDIN_DIR = DOCKER_DIR / "standin"
APT_DIR = Path("/etc/apt")
CA_DIR = Path("/etc/ssl/certs")
PULL_TIMEOUT_SECONDS = 120.0
BUILD_TIMEOUT_SECONDS = 1800.0


class ImageError(HealthPredictError):
    """An image could not be built, or no container engine is there to build it."""


@dataclass(frozen=True)
class Built:
    """One image built, what it was built on, and how long it took."""

    tag: str
    base: str
    seconds: float


@functools.cache
def _engine() -> tuple[str, ...]:
    if shutil.which("docker") and succeeds(["docker", "info"]):
        return ("docker",)
    if shutil.which("podman"):
        return ("podman",)
    raise ImageError(
        "no container engine: install Docker, or podman (docs/orchestration_and_delivery.md)"
    )


def engine() -> list[str]:
    """The container engine's command: docker when its daemon answers, else podman; asked
    once per process (``docker info`` is a round trip, and every engine call needs the answer).

    Raises:
        ImageError: Neither is usable.
    """
    return list(_engine())


def is_podman(command: Sequence[str]) -> bool:
    """Whether ``command`` is podman (which takes build mounts and the docker format flag)."""
    return Path(command[0]).name == "podman"


def engine_environment() -> dict[str, str]:
    """The environment the engine runs in: podman gets the runtime and limits these machines
    need (runc; crun cannot raise the open-files limit here), unless one is configured."""
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(STANDIN_DIR / "containers.conf"))
    return env


def base_default(dockerfile: Path, argument: str) -> str:
    """The default of the base-image build argument ``argument`` of ``dockerfile``, with the
    other arguments it names (``${AIRFLOW_VERSION}``) replaced by their defaults."""
    defaults = dict(re.findall(r"^ARG (\w+)=(\S+)$", dockerfile.read_text(), flags=re.MULTILINE))
    if argument not in defaults:
        raise ImageError(f"{dockerfile.name} declares no ARG {argument}=<image>")
    return re.sub(r"\$\{(\w+)\}", lambda name: defaults.get(name.group(1), ""), defaults[argument])


def build_image(
    dockerfile: Path,
    tag: str,
    context: Path,
    arguments: Mapping[str, str],
    base: str,
    with_ca: bool = True,
) -> Built:
    """Build ``dockerfile`` as ``tag`` with the machine's package sources mounted."""
    command = engine()
    started = time.perf_counter()
    argv = [*command, "build", "-f", str(dockerfile), "-t", tag]
    argv += build_options(command, with_ca)
    argv += [f"--build-arg={name}={value}" for name, value in arguments.items()]
    run([*argv, str(context)], timeout=BUILD_TIMEOUT_SECONDS)
    return Built(tag, base, time.perf_counter() - started)


def build_options(command: Sequence[str], with_ca: bool = True) -> list[str]:
    """What a build needs on this machine: podman gets the package-source mounts, and the
    docker image format, which keeps a Dockerfile's HEALTHCHECK (the OCI format drops it)."""
    if not is_podman(command):
        return []  # Docker builds cannot mount: its daemon's own configuration applies
    return ["--format", "docker", *build_mounts(with_ca)]


def build_mounts(with_ca: bool) -> list[str]:
    """``-v`` arguments giving a build the machine's package sources, for that build only.

    apt: the machine's sources and settings (its mirror may be a dated snapshot, whose
    settings allow an old Release file). pip and uv: the machine's index, if it sets one, and
    with ``with_ca`` its CA bundle (what its network's TLS is signed with). The two small
    configuration files are kept at a fixed private path: the engine's layer cache keys on
    the mounts, so a new path each time would rebuild every layer.
    """
    mounts = [f"{APT_DIR / 'sources.list.d'}:/etc/apt/sources.list.d:ro"]
    if (APT_DIR / "sources.list").is_file():
        mounts.append(f"{APT_DIR / 'sources.list'}:/etc/apt/sources.list:ro")
    for setting in sorted((APT_DIR / "apt.conf.d").glob("*")):
        mounts.append(f"{setting}:/etc/apt/apt.conf.d/99host-{setting.name}:ro")
    if with_ca:
        # The index URL may carry credentials: the folder is private to this user, the files
        # readable by the build's unprivileged users (Airflow's pip runs as uid 50000).
        folder = Path.home() / ".cache" / "healthpredict" / "build"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        folder.chmod(0o700)
        index = pip_index()
        pip_conf = _write_if_changed(folder / "pip.conf", _pip_conf(index))
        uv_toml = _write_if_changed(folder / "uv.toml", _uv_toml(index))
        mounts += [
            f"{CA_DIR}:/etc/ssl/certs:ro",
            f"{pip_conf}:/etc/pip.conf:ro",
            f"{uv_toml}:/etc/uv/uv.toml:ro",
        ]
    return [argument for mount in mounts for argument in ("-v", mount)]


def pip_index() -> str | None:
    """The package index the machine's pip is configured with (None: pip's default)."""
    if os.environ.get("PIP_INDEX_URL"):
        return os.environ["PIP_INDEX_URL"]
    for path in (
        Path("/etc/pip.conf"),
        Path("/etc/xdg/pip/pip.conf"),
        Path.home() / ".config/pip/pip.conf",
        Path.home() / ".pip/pip.conf",
    ):
        parser = configparser.ConfigParser()
        if path.is_file() and parser.read(path) and parser.has_option("global", "index-url"):
            return parser.get("global", "index-url")
    return None


def _write_if_changed(path: Path, text: str) -> Path:
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    path.chmod(0o644)
    return path


def _pip_conf(index: str | None) -> str:
    lines = ["[global]", f"cert = {CA_DIR / 'ca-certificates.crt'}"]
    return "\n".join([*lines, *([f"index-url = {index}"] if index else [])]) + "\n"


def _uv_toml(index: str | None) -> str:
    # uv has its own trust roots unless told to use the system's (the mounted bundle).
    lines = ["native-tls = true"]
    return "\n".join([*lines, *([f'index-url = "{index}"'] if index else [])]) + "\n"


def available(image: str, pull: bool = True) -> bool:
    """Whether ``image`` is in the engine's store, or (``pull``) can be pulled now."""
    command = engine()
    if succeeds([*command, "image", "inspect", image]):
        return True
    return pull and succeeds([*command, "pull", "--quiet", image], PULL_TIMEOUT_SECONDS)


def succeeds(argv: Sequence[str], timeout: float = 60.0) -> bool:
    """Whether ``argv`` exits 0 within ``timeout`` (False when it cannot run at all)."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, timeout=timeout, env=engine_environment()
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def run(argv: Sequence[str], timeout: float = 600.0, stdin: IO[bytes] | None = None) -> str:
    """Run ``argv`` in the engine's environment; its output, or ImageError with its tail."""
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=stdin,
            env=engine_environment(),
        )
    except subprocess.TimeoutExpired as error:
        raise ImageError(f"{' '.join(argv[:3])} did not finish within {timeout:.0f} s") from error
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-25:])
        raise ImageError(f"{' '.join(argv[:3])} failed ({done.returncode}):\n{tail}")
    return done.stdout
