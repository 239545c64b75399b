"""Read-only look-ups of what a Health Predict deployment has in an account.

Used by teardown to find its targets and, at the end, to list anything left.
Everything is found by the ``healthpredict:stack`` tag CDK puts on each
resource, asking each service directly where the tagging index is not enough.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

STACK_TAG_KEY = "healthpredict:stack"  # Same key as stack.STACK_TAG_KEY, without importing CDK.


def stack_outputs(cfn: Any, stack_name: str) -> dict[str, str] | None:
    """Returns the stack's outputs, or ``None`` if there is no such stack."""
    try:
        stacks = cfn.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as err:
        if "does not exist" in str(err):
            return None
        raise
    return {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}


def _has_stack_tag(tags: list[dict[str, str]], stack_name: str) -> bool:
    return any(t.get("Key") == STACK_TAG_KEY and t.get("Value") == stack_name for t in tags)


def tagged_buckets(s3: Any, stack_name: str) -> list[str]:
    """Buckets carrying this stack's tag (asked of S3 itself, not the tagging index)."""
    found = []
    for bucket in s3.list_buckets().get("Buckets", []):
        try:
            tags = s3.get_bucket_tagging(Bucket=bucket["Name"])["TagSet"]
        except ClientError:
            continue  # Untagged, or in another region / not ours to read.
        if _has_stack_tag(tags, stack_name):
            found.append(bucket["Name"])
    return found


def tagged_repositories(ecr: Any, stack_name: str) -> list[str]:
    """Repositories carrying this stack's tag."""
    found = []
    for page in ecr.get_paginator("describe_repositories").paginate():
        for repo in page["repositories"]:
            tags = ecr.list_tags_for_resource(resourceArn=repo["repositoryArn"]).get("tags", [])
            if _has_stack_tag(tags, stack_name):
                found.append(repo["repositoryName"])
    return found


def tagged_arns(tagging: Any, stack_name: str) -> list[str]:
    """ARNs of resources carrying this stack's tag (any service)."""
    arns: list[str] = []
    paginator = tagging.get_paginator("get_resources")
    for page in paginator.paginate(TagFilters=[{"Key": STACK_TAG_KEY, "Values": [stack_name]}]):
        arns.extend(item["ResourceARN"] for item in page["ResourceTagMappingList"])
    return arns


def bucket_exists(s3: Any, bucket: str) -> bool:
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as err:
        if err.response["Error"]["Code"] in {"404", "NoSuchBucket", "NotFound"}:
            return False
        raise
    return True


def repository_exists(ecr: Any, repository: str) -> bool:
    try:
        ecr.describe_repositories(repositoryNames=[repository])
    except ecr.exceptions.RepositoryNotFoundException:
        return False
    return True


def live_instances(ec2: Any, stack_name: str) -> list[str]:
    filters = [
        {"Name": f"tag:{STACK_TAG_KEY}", "Values": [stack_name]},
        {
            "Name": "instance-state-name",
            "Values": ["pending", "running", "stopping", "stopped"],
        },
    ]
    reservations = ec2.describe_instances(Filters=filters)["Reservations"]
    return [i["InstanceId"] for r in reservations for i in r["Instances"]]


def tagged_volumes(ec2: Any, stack_name: str) -> list[str]:
    filters = [{"Name": f"tag:{STACK_TAG_KEY}", "Values": [stack_name]}]
    return [v["VolumeId"] for v in ec2.describe_volumes(Filters=filters)["Volumes"]]
