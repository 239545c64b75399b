"""The prediction service as its own process on loopback, for a replay to send traffic to.

It is started exactly as a deployment starts it (``healthpredict serve``), with fresh random
keys passed in its environment only (never written or logged), logging into the replay's own
deployment of the configured monitoring store and following the registry's champion alias.
Stopping it sends SIGTERM, so it flushes its prediction log as in production.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pydantic import SecretStr

from healthpredict.loop.context import LoopError
from healthpredict.processes import log_tail, stop_process_group, wait_until_ok
from healthpredict.settings import ENV_PREFIX, Settings

START_TIMEOUT_SECONDS = 180.0
STOP_GRACE_SECONDS = 20.0


@dataclass(frozen=True)
class RunningService:
    """A service process and what it takes to talk to it."""

    url: str
    api_key: str
    admin_key: str
    process: subprocess.Popen[bytes]
    log: Path


def free_port() -> int:
    """A TCP port nobody listens on now, on loopback."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def service_process(
    settings: Settings, deployment: str, log: Path, poll_seconds: float = 5.0
) -> Iterator[RunningService]:
    """Start ``healthpredict serve`` for ``deployment``; stop it (SIGTERM) on the way out.

    The child gets ``settings`` (data folder, registry, store, salt) in its environment, so it
    serves the same champion and hashes ids as the replay does; it follows the champion alias
    even when ``settings`` pin a version.

    Raises:
        LoopError: The service exited or did not become ready in time (its log's tail says why).
    """
    port = free_port()
    api_key, admin_key = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env = {
        **inherited,
        **settings_environment(settings),
        "HEALTHPREDICT_API_KEY": api_key,
        "HEALTHPREDICT_ADMIN_KEY": admin_key,
        "HEALTHPREDICT_DEPLOYMENT": deployment,
        "HEALTHPREDICT_SERVE_HOST": "127.0.0.1",
        "HEALTHPREDICT_SERVE_PORT": str(port),
        "HEALTHPREDICT_MODEL_POLL_SECONDS": str(poll_seconds),
    }
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "healthpredict", "serve"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    service = RunningService(f"http://127.0.0.1:{port}", api_key, admin_key, process, log)
    try:
        _wait_ready(service)
        yield service
    finally:
        stop(service.process)


def settings_environment(settings: Settings) -> dict[str, str]:
    """``settings`` as the ``HEALTHPREDICT_*`` variables that rebuild them in a child process
    (the keys and the pinned version excepted: the child gets its own)."""
    env = {}
    fields = settings.flat_fields()
    for name, value in settings.flat().items():
        if value is None or name in ("api_key", "admin_key", "model_version"):
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, (list, dict)):
            value = json.dumps(value)
        elif isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, Path):
            value = value.resolve()
        env[fields[name].env] = str(value)
    return env


def _wait_ready(service: RunningService) -> None:
    why = wait_until_ok(f"{service.url}/ready", START_TIMEOUT_SECONDS, service.process)
    if why is not None:
        raise LoopError(f"the service {why}:\n{log_tail(service.log)}")


def stop(process: subprocess.Popen[bytes]) -> int | None:
    """SIGTERM the service, SIGKILL it after the grace period; its exit status."""
    if process.poll() is not None:
        return process.returncode
    return stop_process_group(process, STOP_GRACE_SECONDS)
