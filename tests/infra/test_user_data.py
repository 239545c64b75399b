"""The instance bootstrap script renders completely and is valid bash."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from healthpredict_infra.user_data import render_user_data

pytestmark = pytest.mark.infra

VALUES = {
    "STACK_NAME": "HealthPredict",
    "REGION": "us-east-1",
    "BUCKET_NAME": "bucket",
    "REPOSITORY_URI": "123456789012.dkr.ecr.us-east-1.amazonaws.com/healthpredict",
    "GIT_REPO_URL": "https://example.org/health-predict.git",
    "GIT_REF": "main",
    "START_COMMAND": "make up",
}


def test_every_placeholder_is_filled() -> None:
    script = render_user_data(VALUES)
    assert "@@" not in script
    assert script.startswith("#!/bin/bash\n")


def test_missing_value_is_an_error() -> None:
    with pytest.raises(KeyError, match="GIT_REF"):
        render_user_data({k: v for k, v in VALUES.items() if k != "GIT_REF"})


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")
def test_script_is_valid_bash(tmp_path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "user_data.sh"
    script.write_text(render_user_data(VALUES))
    result = subprocess.run(
        ["bash", "-n", str(script)], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_no_secrets_or_world_access_in_script() -> None:
    script = render_user_data(VALUES).lower()
    for forbidden in (
        "aws_secret_access_key",
        "aws_access_key_id",
        "0.0.0.0/0",
        "password=",
    ):
        assert forbidden not in script
