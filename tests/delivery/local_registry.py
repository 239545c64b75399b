"""An image registry on loopback: Debian's ``docker-registry`` (the CNCF distribution server).

One process per registry, on a free loopback port, storing in a temporary folder, with no TLS
(podman is told ``--tls-verify=false``, which the delivery allows for loopback only) and,
optionally, an htpasswd login. Without the binary the tests skip, and fail under CI, whose
``.ci/run`` installs the package.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from healthpredict.loop.service import free_port

BINARY = "/usr/bin/docker-registry"
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)


def registry_binary_or_skip() -> str:
    """The registry's binary, or skip (fail under CI) without it."""
    found = shutil.which("docker-registry") or (BINARY if os.access(BINARY, os.X_OK) else None)
    if found is None:
        message = "no docker-registry (Debian package docker-registry; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def htpasswd_line(user: str, password: str) -> str:
    """An htpasswd entry with a bcrypt hash (the only kind the registry accepts)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # crypt goes in 3.13; fine on 3.11
        import crypt

    if not hasattr(crypt, "METHOD_BLOWFISH"):
        pytest.skip("this libcrypt cannot make bcrypt hashes")
    return f"{user}:{crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))}\n"


@dataclass
class LocalRegistry:
    """A running registry; ``host`` is what image names start with (127.0.0.1:PORT)."""

    folder: Path
    login: tuple[str, str] | None = None
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Write the configuration, start the server, wait until its API answers."""
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.folder / "storage")}},
            "http": {"addr": self.host, "secret": "test-only-upload-secret"},
        }
        if self.login is not None:
            htpasswd = self.folder / "htpasswd"
            htpasswd.write_text(htpasswd_line(*self.login))
            config["auth"] = {"htpasswd": {"realm": "hp-deliv", "path": str(htpasswd)}}
        path = self.folder / "config.yml"
        path.write_text(json.dumps(config))  # JSON is YAML
        log = (self.folder / "registry.log").open("ab")
        self.process = subprocess.Popen(
            [registry_binary_or_skip(), "serve", str(path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait()

    def _wait(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                break
            try:
                if requests.get(f"http://{self.host}/v2/", timeout=2).status_code in (200, 401):
                    return
            except requests.RequestException:
                time.sleep(0.2)
        self.stop()
        pytest.fail(f"docker-registry did not answer on {self.host}: {self.log_tail()}")

    def log_tail(self) -> str:
        """The end of the server's log."""
        log = self.folder / "registry.log"
        return log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"

    def stop(self) -> None:
        """Stop this server (its own process only)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def get(self, path: str, **headers: str) -> requests.Response:
        """``GET /v2/<path>`` with the registry's login, if it has one."""
        return requests.get(
            f"http://{self.host}/v2/{path}", headers=headers, auth=self.login, timeout=30
        )

    def tags(self, repository: str) -> list[str]:
        """The tags the registry holds for ``repository`` (none: an empty list)."""
        answer = self.get(f"{repository}/tags/list")
        return [] if answer.status_code == 404 else list(answer.json().get("tags") or [])

    def digest(self, repository: str, tag: str) -> str | None:
        """The registry's own ``Docker-Content-Digest`` for ``repository:tag``."""
        answer = self.get(f"{repository}/manifests/{tag}", Accept=", ".join(MANIFEST_TYPES))
        return answer.headers.get("Docker-Content-Digest") if answer.status_code == 200 else None
