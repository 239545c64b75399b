"""Deploy the synthesized template to a moto server on loopback, check it, tear it down.

What moto's CloudFormation cannot emulate is stated, not faked:

* ``NOT_EMULATED`` resource types are skipped by moto's CloudFormation (it
  only warns); the test asserts that exactly these were skipped, so the
  list stays true as moto evolves. They are covered by ``test_stack.py``.
* Some properties of emulated resources are ignored by moto (see
  ``docs/infrastructure.md``); the checks below only assert what moto applies.
* moto cannot delete route tables, routes, IGWs and flow logs on stack
  deletion; ``moto_shims`` supplies those handlers (see its docstring).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from healthpredict_infra.teardown import Clients, teardown
from infra_support import ADMIN_CIDR, REGION, Synthesized, deploy_stack
from moto.cloudformation.parsing import get_model_map

pytestmark = [
    pytest.mark.infra,
    pytest.mark.filterwarnings("ignore:Tried to parse .* not supported by moto"),
]

NOT_EMULATED = {
    "AWS::S3::BucketPolicy",
    "AWS::SNS::TopicPolicy",
    "AWS::SNS::Subscription",
    "AWS::CloudWatch::Alarm",
    "AWS::Budgets::Budget",
}


@dataclass
class Deployment:
    """A stack deployed to moto, with clients and the physical ids of its resources."""

    stack: Synthesized
    session: boto3.Session
    endpoint: str
    physical: dict[str, str]
    outputs: dict[str, str]

    @property
    def name(self) -> str:
        return str(self.stack.config.stack_name)

    def client(self, service: str) -> Any:
        return self.session.client(service, endpoint_url=self.endpoint)

    def physical_id(self, resource_type: str) -> str:
        (logical_id,) = self.stack.resources(resource_type)
        return self.physical[logical_id]


@pytest.fixture(scope="module", params=["default", "full"])
def deployment(request: pytest.FixtureRequest, moto_endpoint: str) -> Deployment:
    """Deploys one variant with plain CloudFormation into a freshly reset moto."""
    stack: Synthesized = request.getfixturevalue(request.param)
    session, cfn = deploy_stack(stack, moto_endpoint)
    name = stack.config.stack_name
    cfn.get_waiter("stack_create_complete").wait(StackName=name, WaiterConfig={"Delay": 1})
    described = cfn.describe_stacks(StackName=name)["Stacks"][0]
    summaries = cfn.list_stack_resources(StackName=name)["StackResourceSummaries"]
    physical = {
        s["LogicalResourceId"]: s["PhysicalResourceId"]
        for s in summaries
        if s["LogicalResourceId"] and s["ResourceStatus"] == "CREATE_COMPLETE"
    }
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}
    return Deployment(stack, session, moto_endpoint, physical, outputs)


def test_only_documented_types_are_not_emulated(deployment: Deployment) -> None:
    types = {r["Type"] for r in deployment.stack.template["Resources"].values()}
    skipped = types - set(get_model_map())
    expected = (
        NOT_EMULATED
        if deployment.stack.config.alert_email
        else NOT_EMULATED - {"AWS::SNS::Subscription"}
    )
    assert skipped == expected


def test_every_emulated_resource_was_created(deployment: Deployment) -> None:
    supported = set(get_model_map())
    wanted = {
        logical_id
        for logical_id, resource in deployment.stack.template["Resources"].items()
        if resource["Type"] in supported
    }
    assert wanted <= set(deployment.physical), wanted - set(deployment.physical)


def test_outputs(deployment: Deployment) -> None:
    outputs = deployment.outputs
    assert outputs["InstanceId"] == deployment.physical_id("AWS::EC2::Instance")
    assert outputs["BucketName"] == deployment.physical_id("AWS::S3::Bucket")
    repository = deployment.stack.config.repository_name
    assert outputs["RepositoryUri"] == f"123456789012.dkr.ecr.{REGION}.amazonaws.com/{repository}"
    # moto gives the instance no public DNS name, so CloudFormation drops that output here.


def test_network(deployment: Deployment) -> None:
    ec2 = deployment.client("ec2")
    vpc_id = deployment.physical_id("AWS::EC2::VPC")
    (vpc,) = ec2.describe_vpcs(VpcIds=[vpc_id])["Vpcs"]
    assert vpc["CidrBlock"] == deployment.stack.config.vpc_cidr
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"]
    assert len(subnets) == 2
    assert ec2.describe_nat_gateways()["NatGateways"] == []
    (igw,) = ec2.describe_internet_gateways(
        Filters=[{"Name": "attachment.vpc-id", "Values": [vpc_id]}]
    )["InternetGateways"]
    assert igw["InternetGatewayId"] == deployment.physical_id("AWS::EC2::InternetGateway")
    flow_logs = ec2.describe_flow_logs()["FlowLogs"]
    assert len(flow_logs) == (1 if deployment.stack.config.flow_logs else 0)


def test_security_group_admits_only_the_admin_cidr(deployment: Deployment) -> None:
    ec2 = deployment.client("ec2")
    group_id = deployment.physical_id("AWS::EC2::SecurityGroup")
    (group,) = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
    ports = set()
    for permission in group["IpPermissions"]:
        assert [r["CidrIp"] for r in permission["IpRanges"]] == [ADMIN_CIDR]
        assert permission["Ipv6Ranges"] == []
        ports.add(permission["FromPort"])
    config = deployment.stack.config
    assert ports == set(config.service_ports) | ({22} if config.key_pair_name else set())


def test_instance(deployment: Deployment) -> None:
    ec2 = deployment.client("ec2")
    config = deployment.stack.config
    instance_id = deployment.physical_id("AWS::EC2::Instance")
    (reservation,) = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    (instance,) = reservation["Instances"]
    assert instance["InstanceType"] == config.instance_type
    assert instance["SubnetId"] in {
        deployment.physical[i] for i in deployment.stack.resources("AWS::EC2::Subnet")
    }
    assert instance.get("KeyName") == config.key_pair_name
    # The AMI came from the Amazon Linux 2023 SSM parameter, resolved at deploy time.
    assert instance["ImageId"].startswith("ami-")
    profile = deployment.physical_id("AWS::IAM::InstanceProfile")
    assert instance["IamInstanceProfile"]["Arn"].endswith(f":instance-profile/{profile}")
    (root,) = instance["BlockDeviceMappings"]
    (volume,) = ec2.describe_volumes(VolumeIds=[root["Ebs"]["VolumeId"]])["Volumes"]
    assert (volume["Encrypted"], volume["VolumeType"], volume["Size"]) == (
        True,
        "gp3",
        config.root_volume_gb,
    )
    user_data = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    assert user_data["UserData"]["Value"], "user data reached the instance"


def test_bucket(deployment: Deployment) -> None:
    s3 = deployment.client("s3")
    bucket = deployment.physical_id("AWS::S3::Bucket")
    rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"


def test_repository(deployment: Deployment) -> None:
    ecr = deployment.client("ecr")
    (repo,) = ecr.describe_repositories(repositoryNames=[deployment.stack.config.repository_name])[
        "repositories"
    ]
    assert repo["imageTagMutability"] == "IMMUTABLE"


def test_instance_role_policy(deployment: Deployment) -> None:
    iam = deployment.client("iam")
    profile = iam.get_instance_profile(
        InstanceProfileName=deployment.physical_id("AWS::IAM::InstanceProfile")
    )["InstanceProfile"]
    (role,) = profile["Roles"]
    (policy_name,) = iam.list_role_policies(RoleName=role["RoleName"])["PolicyNames"]
    document = iam.get_role_policy(RoleName=role["RoleName"], PolicyName=policy_name)[
        "PolicyDocument"
    ]
    bucket_arn = f"arn:aws:s3:::{deployment.physical_id('AWS::S3::Bucket')}"
    repo_arn = (
        f"arn:aws:ecr:{REGION}:123456789012:repository/{deployment.stack.config.repository_name}"
    )
    resources = {json.dumps(s["Resource"]) for s in document["Statement"]}
    assert resources == {
        json.dumps(bucket_arn),
        json.dumps(f"{bucket_arn}/*"),
        json.dumps(repo_arn),
        '"*"',
    }


def test_teardown_leaves_nothing(deployment: Deployment) -> None:
    """Runs last for each variant: data in the bucket and repository, then full teardown."""
    s3, ecr = deployment.client("s3"), deployment.client("ecr")
    bucket, repository = (
        deployment.outputs["BucketName"],
        deployment.stack.config.repository_name,
    )
    for body in (b"v1", b"v2", b"v3"):
        s3.put_object(Bucket=bucket, Key="mlflow/model.pkl", Body=body)
    s3.delete_object(Bucket=bucket, Key="mlflow/model.pkl")  # leaves a delete marker
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "digest": "sha256:" + "a" * 64,
            "size": 1,
            "mediaType": "application/vnd.docker.container.image.v1+json",
        },
        "layers": [],
    }
    ecr.put_image(repositoryName=repository, imageManifest=json.dumps(manifest), imageTag="v1")

    clients = Clients.create(deployment.session, deployment.endpoint)
    log: list[str] = []
    assert teardown(clients, deployment.name, log=log.append) == [], log
    assert any("stopping instance" in line for line in log)

    _assert_nothing_left(deployment)


def _assert_nothing_left(deployment: Deployment) -> None:
    """Independent of teardown's own check: look at every service the stack touched."""
    cfn, ec2, iam = (
        deployment.client("cloudformation"),
        deployment.client("ec2"),
        deployment.client("iam"),
    )
    with pytest.raises(ClientError, match="does not exist"):
        cfn.describe_stacks(StackName=deployment.name)
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["false"]}])["Vpcs"]
    assert vpcs == []
    assert ec2.describe_internet_gateways()["InternetGateways"] == []
    assert [g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]] == ["default"]
    assert ec2.describe_flow_logs()["FlowLogs"] == []
    states = {
        i["State"]["Name"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
    }
    assert states <= {"terminated"}
    assert [v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]] == []
    assert iam.list_roles()["Roles"] == []
    assert iam.list_instance_profiles()["InstanceProfiles"] == []
    assert deployment.client("s3").list_buckets()["Buckets"] == []
    assert deployment.client("ecr").describe_repositories()["repositories"] == []
    assert deployment.client("sns").list_topics()["Topics"] == []
    assert deployment.client("logs").describe_log_groups()["logGroups"] == []
