"""Explicit teardown: stop the instance, delete the stack, empty and delete storage.

The bucket and the repository are retained by CloudFormation on purpose (a
stray ``cdk destroy`` must not lose data), so deleting the stack alone is not
enough. Run from ``infra/`` (or via ``make infra-down``)::

    python -m healthpredict_infra.teardown --stack-name HealthPredict --region us-east-1

It ends by listing anything still left and exits non-zero if something is.
``--endpoint-url`` points it at an emulator (the tests use moto on loopback).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import boto3

from healthpredict_infra.inventory import (
    bucket_exists,
    live_instances,
    repository_exists,
    stack_outputs,
    tagged_arns,
    tagged_buckets,
    tagged_repositories,
    tagged_volumes,
)

Log = Callable[[str], None]


@dataclass
class Clients:
    """The boto3 clients teardown needs, all for one region and endpoint."""

    cloudformation: Any
    ec2: Any
    s3: Any
    ecr: Any
    tagging: Any

    @classmethod
    def create(cls, session: boto3.Session, endpoint_url: str | None = None) -> Clients:
        """Creates the clients from ``session``, optionally against an emulator."""

        def make(service: str) -> Any:
            return session.client(service, endpoint_url=endpoint_url)

        return cls(
            make("cloudformation"),
            make("ec2"),
            make("s3"),
            make("ecr"),
            make("resourcegroupstaggingapi"),
        )


@dataclass
class Targets:
    """What to remove; filled from the stack outputs, arguments or tags."""

    instance_id: str | None = None
    bucket: str | None = None
    repository: str | None = None
    found_by: list[str] = field(default_factory=list)


def find_targets(
    clients: Clients, stack_name: str, bucket: str | None, repository: str | None
) -> Targets:
    """Locates the instance, bucket and repository to remove.

    Stack outputs come first; whatever they do not name (the stack is
    already gone after a plain ``cdk destroy`` or an interrupted teardown) is
    found by the stack tag that CDK put on every resource.
    """
    targets = Targets(bucket=bucket, repository=repository)
    outputs = stack_outputs(clients.cloudformation, stack_name)
    if outputs is not None:
        targets.found_by.append("stack outputs")
        targets.instance_id = outputs.get("InstanceId")
        targets.bucket = targets.bucket or outputs.get("BucketName")
        targets.repository = targets.repository or outputs.get("RepositoryName")
    if not targets.instance_id:
        targets.instance_id = next(iter(live_instances(clients.ec2, stack_name)), None)
        if targets.instance_id:
            targets.found_by.append("instance tag")
    if not targets.bucket:
        targets.bucket = next(iter(tagged_buckets(clients.s3, stack_name)), None)
        if targets.bucket:
            targets.found_by.append("bucket tag")
    if not targets.repository:
        targets.repository = next(iter(tagged_repositories(clients.ecr, stack_name)), None)
        if targets.repository:
            targets.found_by.append("repository tag")
    return targets


def stop_instance(ec2: Any, instance_id: str | None, log: Log) -> None:
    """Stops the instance first so nothing writes to the bucket while it is emptied."""
    if not instance_id:
        return
    log(f"stopping instance {instance_id}")
    ec2.stop_instances(InstanceIds=[instance_id])
    ec2.get_waiter("instance_stopped").wait(InstanceIds=[instance_id], WaiterConfig={"Delay": 5})


def delete_stack(cfn: Any, stack_name: str, log: Log) -> None:
    """Deletes the stack and waits; the retained bucket and repository survive it."""
    if stack_outputs(cfn, stack_name) is None:
        log(f"stack {stack_name} already gone")
        return
    log(f"deleting stack {stack_name}")
    cfn.delete_stack(StackName=stack_name)
    cfn.get_waiter("stack_delete_complete").wait(StackName=stack_name, WaiterConfig={"Delay": 5})


def empty_and_delete_bucket(s3: Any, bucket: str | None, log: Log) -> None:
    """Deletes every object version and delete marker, then the bucket itself."""
    if not bucket or not bucket_exists(s3, bucket):
        return
    log(f"emptying bucket {bucket} (all versions)")
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        keys = [
            {"Key": item["Key"], "VersionId": item["VersionId"]}
            for item in page.get("Versions", []) + page.get("DeleteMarkers", [])
        ]
        # A listing page holds at most 1,000 entries, which is delete_objects' limit.
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    log(f"deleting bucket {bucket}")
    s3.delete_bucket(Bucket=bucket)


def delete_repository(ecr: Any, repository: str | None, log: Log) -> None:
    """Deletes the repository together with its images."""
    if not repository:
        return
    try:
        ecr.delete_repository(repositoryName=repository, force=True)
        log(f"deleted repository {repository} and its images")
    except ecr.exceptions.RepositoryNotFoundException:
        pass


def leftovers(clients: Clients, stack_name: str, targets: Targets) -> list[str]:
    """Lists anything of this deployment that still exists (and may cost money)."""
    left: list[str] = []
    if stack_outputs(clients.cloudformation, stack_name) is not None:
        left.append(f"stack {stack_name}")
    if targets.bucket and bucket_exists(clients.s3, targets.bucket):
        left.append(f"bucket {targets.bucket}")
    if targets.repository and repository_exists(clients.ecr, targets.repository):
        left.append(f"repository {targets.repository}")
    left.extend(f"bucket {b}" for b in tagged_buckets(clients.s3, stack_name))
    left.extend(f"repository {r}" for r in tagged_repositories(clients.ecr, stack_name))
    left.extend(f"instance {i}" for i in live_instances(clients.ec2, stack_name))
    left.extend(f"volume {v}" for v in tagged_volumes(clients.ec2, stack_name))
    # Anything else still tagged. Checked directly above: instances (terminated
    # ones linger in listings), volumes, buckets and repositories.
    checked = (":instance/", ":volume/", ":s3:::", ":ecr:")
    left.extend(
        f"tagged resource {arn}"
        for arn in tagged_arns(clients.tagging, stack_name)
        if not any(marker in arn for marker in checked)
    )
    return sorted(set(left))


def teardown(
    clients: Clients,
    stack_name: str,
    *,
    bucket: str | None = None,
    repository: str | None = None,
    log: Log = print,
) -> list[str]:
    """Runs the whole teardown and returns what is left (empty when clean).

    Args:
        clients: boto3 clients for the stack's region.
        stack_name: CloudFormation stack name.
        bucket: Bucket name, if the stack outputs cannot provide it.
        repository: Repository name, if the stack outputs cannot provide it.
        log: Progress printer.

    Returns:
        Descriptions of resources that still exist.
    """
    targets = find_targets(clients, stack_name, bucket, repository)
    log(f"targets ({', '.join(targets.found_by) or 'arguments'}): {targets}")
    stop_instance(clients.ec2, targets.instance_id, log)
    delete_stack(clients.cloudformation, stack_name, log)
    empty_and_delete_bucket(clients.s3, targets.bucket, log)
    delete_repository(clients.ecr, targets.repository, log)
    return leftovers(clients, stack_name, targets)


def stop_only(args: argparse.Namespace) -> int:
    """Stops the instance and nothing else (storage keeps billing; see infra-cost)."""
    clients = Clients.create(boto3.Session(region_name=args.region), args.endpoint_url)
    targets = find_targets(clients, args.stack_name, args.bucket, args.repository)
    if not targets.instance_id:
        print(f"no instance of stack {args.stack_name} in {args.region}: nothing to stop")
        return 1
    stop_instance(clients.ec2, targets.instance_id, print)
    print(f"stopped; restart: aws ec2 start-instances --instance-ids {targets.instance_id}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; exits 1 if anything is left behind."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack-name", default="HealthPredict")
    parser.add_argument("--region", required=True)
    parser.add_argument("--bucket", help="bucket name if the stack no longer exists")
    parser.add_argument("--repository", help="repository name if the stack no longer exists")
    parser.add_argument("--endpoint-url", help="AWS endpoint override, e.g. a local emulator")
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    parser.add_argument("--stop-only", action="store_true", help="only stop the instance, keep all")
    args = parser.parse_args(argv)
    if args.stop_only:
        return stop_only(args)
    if not args.yes:
        answer = input(f"Delete stack {args.stack_name} and ALL its data? Type the stack name: ")
        if answer.strip() != args.stack_name:
            print("aborted")
            return 1
    clients = Clients.create(boto3.Session(region_name=args.region), args.endpoint_url)
    left = teardown(clients, args.stack_name, bucket=args.bucket, repository=args.repository)
    if left:
        print("LEFT BEHIND (still billed):\n  " + "\n  ".join(left))
        return 1
    print("teardown complete: nothing left behind")
    return 0


if __name__ == "__main__":
    sys.exit(main())
