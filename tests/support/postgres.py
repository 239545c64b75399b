"""A throwaway PostgreSQL cluster on loopback, for tests of the monitoring store's PostgreSQL path.

Uses the server binaries of the Debian ``postgresql`` package; initdb refuses to run as root,
so as root the cluster is created and run as the ``postgres`` system user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def _binary(name: str) -> str | None:
    for folder in BIN_DIRS:
        if (folder / name).exists():
            return str(folder / name)
    return shutil.which(name)


def _as_user() -> list[str]:
    if os.geteuid() != 0:
        return []
    pwd.getpwnam("postgres")  # KeyError: no user to run as
    return ["runuser", "-u", "postgres", "--"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def throwaway_postgres() -> Iterator[str]:
    """Start a cluster in a new temporary folder; yield its SQLAlchemy URL; stop and remove it.

    The folder is made directly under the system temp dir: pytest's own folders are private
    to root, and the server may run as ``postgres``.
    """
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        message = "PostgreSQL server binaries not installed"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    prefix = _as_user()
    folder = Path(tempfile.mkdtemp(prefix="healthpredict-pg-"))
    if prefix:
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "pgdata", _free_port()
    try:
        subprocess.run(
            [*prefix, initdb, "-D", str(data), "-U", "healthpredict", "--auth=trust", "-E", "UTF8"],
            check=True,
            capture_output=True,
        )
    except subprocess.CalledProcessError as error:
        shutil.rmtree(folder, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {error.stderr.decode()[-500:]}") from error
    options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={folder}"
    subprocess.run(
        [
            *prefix,
            pg_ctl,
            "-D",
            str(data),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "-l",
            str(folder / "server.log"),
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+psycopg://healthpredict@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(folder, ignore_errors=True)
