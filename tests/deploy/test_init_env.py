"""deploy/compose/init_env.py: a complete, private .env with fresh secrets, never overwritten."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from tests.deploy.conftest import COMPOSE_DIR, load_init_env
from tests.deploy.interpolation import read_dotenv


def test_fills_every_secret_and_keeps_the_settings(tmp_path: Path) -> None:
    target = tmp_path / ".env"
    assert load_init_env().main(["--output", str(target)]) == 0
    example = read_dotenv((COMPOSE_DIR / ".env.example").read_text())
    written = read_dotenv(target.read_text())
    assert written.keys() == example.keys()
    for name, value in example.items():
        if value:
            assert written[name] == value, name
        else:
            assert len(written[name]) >= 12, name
    # Only the owner may read it, from the moment it exists.
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert len(base64.urlsafe_b64decode(written["AIRFLOW_FERNET_KEY"])) == 32


def test_secrets_differ_between_runs_and_between_variables(tmp_path: Path) -> None:
    init_env = load_init_env()
    first, second = tmp_path / "a.env", tmp_path / "b.env"
    init_env.main(["--output", str(first)])
    init_env.main(["--output", str(second)])
    a, b = read_dotenv(first.read_text()), read_dotenv(second.read_text())
    example = read_dotenv((COMPOSE_DIR / ".env.example").read_text())
    secrets = [name for name, value in example.items() if not value]
    assert secrets and all(a[name] != b[name] for name in secrets)
    assert len({a[name] for name in secrets}) == len(secrets)


def test_refuses_to_replace_an_existing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / ".env"
    target.write_text("KEEP=me\n")
    assert load_init_env().main(["--output", str(target)]) == 1
    assert target.read_text() == "KEEP=me\n" and "--force" in capsys.readouterr().err
    assert load_init_env().main(["--output", str(target), "--force"]) == 0
    assert "KEEP" not in target.read_text()
