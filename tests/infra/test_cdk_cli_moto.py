"""Opt-in: the `make infra-up` / `make infra-down` path, CDK CLI included, against moto.

Skipped unless ``HEALTHPREDICT_INFRA_TEST_CDK_CLI=1``: it runs the CDK CLI
from npm (``npx aws-cdk@2``), which needs Node.js and the npm registry or
cache, while the rest of tests/infra is fully offline. Both the CLI (AWS SDK
for JavaScript v3) and boto3 honour ``AWS_ENDPOINT_URL``, so every AWS call
goes to the loopback moto server.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from infra_support import ADMIN_CIDR, INFRA_DIR, fresh_moto

pytestmark = [
    pytest.mark.infra,
    pytest.mark.skipif(
        os.environ.get("HEALTHPREDICT_INFRA_TEST_CDK_CLI") != "1" or not shutil.which("npx"),
        reason="set HEALTHPREDICT_INFRA_TEST_CDK_CLI=1 (needs npx and the npm registry)",
    ),
    pytest.mark.filterwarnings("ignore:Tried to parse .* not supported by moto"),
]


def _emulator_env(endpoint: str) -> dict[str, str]:
    """Environment that can only reach the emulator: dummy keys, no profiles, no IMDS."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "CDK_", "HEALTHPREDICT_INFRA_"))
    }
    env.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_REGION="us-east-1",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
        CDK_DISABLE_CLI_TELEMETRY="true",
        JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION="20",
        JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION="1",
        HEALTHPREDICT_INFRA_ADMIN_CIDR=ADMIN_CIDR,
        # Known AZs: the CLI does no look-up and writes no cdk.context.json.
        HEALTHPREDICT_INFRA_AVAILABILITY_ZONES="us-east-1a,us-east-1b",
    )
    return env


def test_cdk_cli_deploy_then_teardown(moto_endpoint: str, tmp_path: Path) -> None:
    session = fresh_moto(moto_endpoint)
    env = _emulator_env(moto_endpoint)
    deploy = [
        "npx", "--yes", "aws-cdk@2", "deploy", "--no-notices", "--require-approval", "never",
        "--app", f"{sys.executable} app.py", "--output", str(tmp_path / "cdk.out"),
    ]  # fmt: skip
    _run(deploy, env)
    _assert_deployed(session, moto_endpoint)

    teardown = [
        sys.executable, "-m", "healthpredict_infra.teardown", "--region", "us-east-1", "--yes",
    ]  # fmt: skip
    output = _run(teardown, env)
    assert "stopping instance" in output
    assert "nothing left behind" in output
    assert not (INFRA_DIR / "cdk.context.json").exists()


def _run(command: list[str], env: dict[str, str]) -> str:
    """Runs a command in infra/ like the Make targets do; returns its output."""
    result = subprocess.run(
        command,
        cwd=INFRA_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _assert_deployed(session: Any, endpoint: str) -> None:
    cfn = session.client("cloudformation", endpoint_url=endpoint)
    (stack,) = cfn.describe_stacks(StackName="HealthPredict")["Stacks"]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    ec2 = session.client("ec2", endpoint_url=endpoint)
    reservations = ec2.describe_instances()["Reservations"]
    assert [i["State"]["Name"] for r in reservations for i in r["Instances"]] == ["running"]
