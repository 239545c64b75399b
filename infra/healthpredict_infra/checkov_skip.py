"""Inline checkov suppressions: a skipped check is written next to its resource, with why.

checkov reads ``Metadata.checkov.skip`` from each CloudFormation resource, so a skip
lives in the synthesized template beside what it excuses (``make infra-checkov``;
tests/infra/test_checkov.py fails on any check that neither passes nor is skipped).
"""

from __future__ import annotations

from typing import Any, cast

import aws_cdk as cdk
from constructs import IConstruct

METADATA_KEY = "checkov"


def skip_check(construct: IConstruct, check_id: str, reason: str) -> None:
    """Tells checkov to skip ``check_id`` on the construct's CloudFormation resource.

    Args:
        construct: An L2 construct (its default child is used) or a CfnResource.
        check_id: The checkov id, e.g. ``CKV_AWS_18``.
        reason: Why the check does not apply; shown in checkov's report.

    Raises:
        ValueError: If the reason is blank or the construct has no CloudFormation resource.
    """
    if not reason.strip():
        raise ValueError(f"a skipped checkov check needs a reason: {check_id}")
    resource = construct if isinstance(construct, cdk.CfnResource) else construct.node.default_child
    if not isinstance(resource, cdk.CfnResource):
        raise ValueError(f"{construct.node.path} has no CloudFormation resource to annotate")
    # One metadata entry holds every skip: add_metadata replaces, so keep earlier ones.
    existing = cast(dict[str, Any] | None, resource.get_metadata(METADATA_KEY)) or {}
    skips = [*existing.get("skip", []), {"id": check_id, "comment": reason}]
    resource.add_metadata(METADATA_KEY, {**existing, "skip": skips})
