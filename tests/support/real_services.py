"""The real services of a deployment, started on loopback for the integration tests.

A throwaway PostgreSQL cluster (one database each for MLflow and the monitoring store, more on
request), an S3 endpoint (moto server), and a real ``mlflow server`` process using both: its
backend store in PostgreSQL, its artifacts proxied to the S3 bucket. One set per test session
(:func:`real_services`); everything started is stopped at the end, also when a test fails,
and the MLflow server can be stopped and started again to test a registry that goes away.

Use it from a test module with ``from tests.support.real_services import real_services``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from moto.server import ThreadedMotoServer

from healthpredict import processes
from tests.support.postgres import _free_port, throwaway_postgres

BUCKET = "healthpredict-artifacts"
DUMMY_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
_START_TIMEOUT_SECONDS = 180.0


def stop_process_group(process: subprocess.Popen[bytes] | None, grace: float = 10.0) -> None:
    """SIGTERM the process's group, SIGKILL it after ``grace`` seconds; no error if gone."""
    if process is not None and process.poll() is None:
        processes.stop_process_group(process, grace)


def wait_http(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Poll ``url`` until it answers 200; fail with the log's tail if the process dies first."""
    why = processes.wait_until_ok(url, timeout, process)
    if why is not None:
        pytest.fail(f"{url} {why}:\n{processes.log_tail(log)}")


@dataclass
class MlflowServer:
    """One ``mlflow server`` process on a fixed loopback port; stop and start at will."""

    backend_uri: str
    artifacts_destination: str
    env: dict[str, str]
    log: Path
    port: int = field(default_factory=_free_port)
    process: subprocess.Popen[bytes] | None = None
    # Containers reach a server on the host through the bridge, so it may need to listen on
    # every interface and answer their Host header (MLflow refuses unknown ones).
    bind: str = "127.0.0.1"
    allowed_hosts: str | None = None

    @classmethod
    def for_containers(cls, folder: Path) -> MlflowServer:
        """A server in ``folder`` (SQLite, local artifacts) that containers on the default
        bridge reach as ``host.containers.internal``; not started."""
        return cls(
            backend_uri=f"sqlite:///{folder / 'mlflow.db'}",
            artifacts_destination=str(folder / "artifacts"),
            env={k: v for k, v in os.environ.items() if not k.startswith("HEALTHPREDICT_")},
            log=folder / "mlflow.log",
            bind="0.0.0.0",
            allowed_hosts="host.containers.internal:*,127.0.0.1:*,localhost:*",
        )

    @property
    def url(self) -> str:
        """The tracking URI clients use."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the server (the same port, database and bucket each time) and wait for it."""
        command = [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            self.backend_uri,
            "--artifacts-destination",
            self.artifacts_destination,
            "--host",
            self.bind,
            "--port",
            str(self.port),
            "--workers",
            "1",
            *(["--allowed-hosts", self.allowed_hosts] if self.allowed_hosts else []),
        ]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                command, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_http(f"{self.url}/health", self.process, self.log, _START_TIMEOUT_SECONDS)

    def stop(self) -> None:
        """Stop the server and every process it started."""
        stop_process_group(self.process)
        self.process = None


@dataclass(frozen=True)
class RealServices:
    """Addresses of the running services."""

    postgres_url: str
    s3_endpoint: str
    bucket: str
    mlflow: MlflowServer
    folder: Path

    def database_url(self, name: str) -> str:
        """A SQLAlchemy URL of database ``name`` on the cluster, created if missing."""
        return create_database(self.postgres_url, name)


def create_database(admin_url: str, name: str) -> str:
    """Create ``name`` on the cluster of ``admin_url`` unless it exists; return its URL."""
    import psycopg

    dsn = admin_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as connection:
        exists = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
        ).fetchone()
        if not exists:
            connection.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


@contextmanager
def moto_s3() -> Iterator[str]:
    """An S3 endpoint on loopback (moto server in a thread); yields its URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_client(endpoint: str) -> object:
    """A boto3 S3 client for the emulator (dummy credentials)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=DUMMY_AWS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=DUMMY_AWS["AWS_SECRET_ACCESS_KEY"],
        region_name=DUMMY_AWS["AWS_DEFAULT_REGION"],
    )


@pytest.fixture(scope="session")
def real_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServices]:
    """PostgreSQL, S3 and an MLflow server on both, for the whole session."""
    folder = tmp_path_factory.mktemp("real-services")
    with ExitStack() as stack:
        postgres = stack.enter_context(throwaway_postgres())
        s3 = stack.enter_context(moto_s3())
        s3_client(s3).create_bucket(Bucket=BUCKET)  # type: ignore[attr-defined]
        # The server, not the clients, talks to S3: artifacts are proxied through it.
        server_env = {
            **os.environ,
            **DUMMY_AWS,
            "MLFLOW_S3_ENDPOINT_URL": s3,
            # No GenAI job runner: not used here, and one process less to start and stop.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
        server = MlflowServer(
            backend_uri=create_database(postgres, "mlflow"),
            artifacts_destination=f"s3://{BUCKET}/mlflow",
            env={k: v for k, v in server_env.items() if not k.startswith("HEALTHPREDICT_")},
            log=folder / "mlflow-server.log",
        )
        stack.callback(server.stop)
        server.start()
        yield RealServices(postgres, s3, BUCKET, server, folder)
