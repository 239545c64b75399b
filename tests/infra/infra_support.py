"""Shared constants and helpers for the infrastructure tests (not a test module)."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
INFRA_DIR = HERE.parents[1] / "infra"
if str(INFRA_DIR) not in sys.path:
    sys.path.insert(0, str(INFRA_DIR))
# jsii warns on every import under Node 20; the warning is noise in test output.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

REGION = "us-east-1"
ADMIN_CIDR = "203.0.113.0/24"  # TEST-NET-3 (RFC 5737): never a real network.
TEST_ACCOUNT = "123456789012"  # moto's default account.

# Everything optional switched on, pinned to an account so AZs are literal.
FULL_CONTEXT: dict[str, Any] = {
    "stack_name": "HealthPredictTest",
    "admin_cidr": ADMIN_CIDR,
    "region": REGION,
    "account": TEST_ACCOUNT,
    "availability_zones": ["us-east-1a", "us-east-1b"],
    "instance_type": "t3.large",
    "key_pair_name": "hp-admin",
    "flow_logs": True,
    "alert_email": "alerts@example.org",
    "bucket_name": "healthpredict-test-data",
    "git_repo_url": "https://example.org/health-predict.git",
    "budget_amount": 30,
    "idle_hours": 3,
    "keep_images": 7,
}


@dataclass(frozen=True)
class Synthesized:
    """A synthesized stack: its config, template (dict and assertions) and assembly."""

    config: Any
    template: dict[str, Any]
    assertions: Any
    assembly_dir: Path

    def resources(self, resource_type: str) -> dict[str, dict[str, Any]]:
        """Resources of one type, by logical id."""
        return {
            logical_id: resource
            for logical_id, resource in self.template["Resources"].items()
            if resource["Type"] == resource_type
        }

    def only(self, resource_type: str) -> dict[str, Any]:
        """The single resource of a type (fails if there is not exactly one)."""
        found = list(self.resources(resource_type).values())
        assert len(found) == 1, f"expected one {resource_type}, found {len(found)}"
        return found[0]


def synthesize(context: dict[str, Any], outdir: Path) -> Synthesized:
    """Synthesizes the app with ``context`` and no environment overrides."""
    from aws_cdk.assertions import Template
    from healthpredict_infra.main import build_app

    app, stack = build_app(context=context, environ={}, outdir=str(outdir))
    assembly = app.synth()
    template = json.loads((Path(assembly.directory) / stack.template_file).read_text())
    return Synthesized(
        stack.config, template, Template.from_json(template), Path(assembly.directory)
    )


def fresh_moto(endpoint: str) -> Any:
    """Resets the emulator's state and returns a boto3 session with dummy credentials."""
    import boto3

    request = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
    urllib.request.urlopen(request, timeout=10).close()
    # Explicit dummy credentials: nothing here may ever reach a real account.
    return boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )


def deploy_stack(stack: Synthesized, endpoint: str) -> tuple[Any, Any]:
    """Resets moto, creates ``stack`` with plain CloudFormation; returns (session, cfn client)."""
    session = fresh_moto(endpoint)
    if stack.config.key_pair_name:
        ec2 = session.client("ec2", endpoint_url=endpoint)
        ec2.create_key_pair(KeyName=stack.config.key_pair_name)
    cfn = session.client("cloudformation", endpoint_url=endpoint)
    cfn.create_stack(
        StackName=stack.config.stack_name,
        TemplateBody=json.dumps(stack.template),
        Capabilities=["CAPABILITY_IAM"],
    )
    return session, cfn
