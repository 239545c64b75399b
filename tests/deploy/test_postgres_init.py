"""The compose stack's PostgreSQL init script, run for real on a throwaway server.

The postgres image runs deploy/compose/postgres/init-databases.sh with psql and the
superuser's environment; here the same script runs against a loopback cluster.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import subprocess
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tests.deploy.conftest import COMPOSE_DIR
from tests.support.postgres import BIN_DIRS, throwaway_postgres

pytestmark = pytest.mark.integration

SCRIPT = COMPOSE_DIR / "postgres" / "init-databases.sh"
# Quotes and a backslash: the script must pass passwords to SQL without breaking (or
# injecting into) the statement.
PASSWORDS = {
    "AIRFLOW_DB_PASSWORD": "air'flow\"pw\\1",
    "MLFLOW_DB_PASSWORD": "ml-flow_pw-2",
    "MONITORING_DB_PASSWORD": "mon; DROP ROLE postgres; --",
}
DATABASES = ("airflow", "mlflow", "monitoring")


@pytest.fixture(scope="module")
def initialised() -> Iterator[sa.Engine]:
    """A fresh server on which the init script ran once; yields a superuser engine."""
    with throwaway_postgres() as url:
        parsed = make_url(url)
        env = {
            **os.environ,
            **PASSWORDS,
            "PATH": os.pathsep.join([*map(str, BIN_DIRS), os.environ.get("PATH", "")]),
            "POSTGRES_USER": parsed.username or "",
            "PGHOST": parsed.host or "",
            "PGPORT": str(parsed.port),
        }
        result = subprocess.run(
            ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        engine = sa.create_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()


def _scalar(engine: sa.Engine, sql: str, **params: str) -> object:
    with engine.connect() as connection:
        return connection.execute(sa.text(sql), params).scalar()


def test_each_component_gets_a_login_role_and_owns_its_database(initialised: sa.Engine) -> None:
    for name in DATABASES:
        owner = _scalar(
            initialised,
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = :name",
            name=name,
        )
        assert owner == name
        can_login = _scalar(
            initialised, "SELECT rolcanlogin FROM pg_roles WHERE rolname = :n", n=name
        )
        assert can_login is True


def test_passwords_are_set_verbatim(initialised: sa.Engine) -> None:
    # SCRAM verifiers cannot be reversed: derive the stored key from the expected password.
    # Matching verbatim also shows the quotes and the "; DROP ROLE" stayed inside the value.
    for name, variable in zip(DATABASES, PASSWORDS, strict=True):
        stored = _scalar(
            initialised, "SELECT rolpassword FROM pg_authid WHERE rolname = :n", n=name
        )
        assert isinstance(stored, str) and stored.startswith("SCRAM-SHA-256$")
        assert _scram_matches(stored, PASSWORDS[variable]), name


def test_no_component_can_connect_to_another_ones_database(initialised: sa.Engine) -> None:
    for role in DATABASES:
        for database in DATABASES:
            allowed = _scalar(
                initialised,
                "SELECT has_database_privilege(:role, :database, 'CONNECT')",
                role=role,
                database=database,
            )
            assert allowed is (role == database), (role, database)


def _scram_matches(verifier: str, password: str) -> bool:
    """RFC 5802 check of ``password`` against a PostgreSQL SCRAM-SHA-256 verifier."""
    method, rest = verifier.split("$", 1)
    iterations_salt, keys = rest.split("$")
    iterations, salt = iterations_salt.split(":")
    stored_key = base64.b64decode(keys.split(":")[0])
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(salt), int(iterations)
    )
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return method == "SCRAM-SHA-256" and hashlib.sha256(client_key).digest() == stored_key
