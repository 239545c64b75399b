"""The Health Predict stack: one EC2 instance with S3 and ECR beside it.

Everything (Kind cluster, PostgreSQL, MLflow, the API) runs in Docker on one
instance so the bill is one instance-hour rate, and the whole environment can
be stopped or torn down when not in use (see docs/infrastructure.md).
"""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from healthpredict_infra.checkov_skip import skip_check
from healthpredict_infra.config import InfraConfig
from healthpredict_infra.cost_guard import CostGuard
from healthpredict_infra.iam_policy import instance_policy_statements
from healthpredict_infra.user_data import render_user_data

PROJECT_TAG = "healthpredict"
STACK_TAG_KEY = "healthpredict:stack"
ROOT_DEVICE = "/dev/xvda"  # Amazon Linux 2023's root device name.


class HealthPredictStack(cdk.Stack):
    """VPC, instance, bucket, repository, least-privilege role and cost guard.

    Args:
        scope: Parent construct (the CDK app).
        construct_id: Stack id; also the CloudFormation stack name.
        config: Validated settings.
        **kwargs: Passed to ``cdk.Stack``.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, config: InfraConfig, **kwargs: Any
    ) -> None:
        super().__init__(
            scope,
            construct_id,
            # No bootstrap stack: the template is deployed with the caller's
            # credentials and has no assets, so plain CloudFormation (or moto) works.
            synthesizer=cdk.LegacyStackSynthesizer(),
            env=cdk.Environment(account=config.account, region=config.region),
            description="Health Predict: single EC2 MLOps host with S3 and ECR",
            **kwargs,
        )
        self.config = config
        cdk.Tags.of(self).add("Project", PROJECT_TAG)
        cdk.Tags.of(self).add(STACK_TAG_KEY, construct_id)

        self.vpc = self._vpc()
        self.security_group = self._security_group()
        self.bucket = self._bucket()
        self.repository = self._repository()
        self.role = self._instance_role()
        self.instance = self._instance()
        self.cost_guard = CostGuard(self, "CostGuard", config=config, instance=self.instance)
        self._outputs()

    def _vpc(self) -> ec2.Vpc:
        """Public subnets only: a NAT gateway would cost more than the instance."""
        cfg = self.config
        vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(cfg.vpc_cidr),
            availability_zones=list(cfg.availability_zones) or None,
            max_azs=None if cfg.availability_zones else 2,
            nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24
                )
            ],
            # True would add a Lambda-backed custom resource, i.e. an asset that
            # needs a bootstrap bucket; nothing uses the default group anyway.
            restrict_default_security_group=False,
        )
        if cfg.flow_logs:
            log_group = logs.LogGroup(
                self,
                "FlowLogGroup",
                retention=logs.RetentionDays.ONE_WEEK,
                removal_policy=cdk.RemovalPolicy.DESTROY,
            )
            skip_check(
                log_group,
                "CKV_AWS_158",
                "Flow-log metadata only, kept one week, and CloudWatch Logs encrypts it at rest "
                "by default. KMS here needs a customer-managed key ($1/month) whose policy "
                "admits the logs service.",
            )
            vpc.add_flow_log(
                "FlowLog",
                destination=ec2.FlowLogDestination.to_cloud_watch_logs(log_group),
            )
        return vpc

    def _security_group(self) -> ec2.SecurityGroup:
        """Opens SSH (only with a key pair) and the service ports to the admin CIDR only."""
        cfg = self.config
        group = ec2.SecurityGroup(
            self,
            "InstanceSecurityGroup",
            vpc=self.vpc,
            description="Health Predict host: admin CIDR only",
            allow_all_outbound=True,  # Packages, images and the git clone come from the internet.
        )
        peer = (
            ec2.Peer.ipv6(cfg.admin_cidr)
            if ":" in cfg.admin_cidr
            else ec2.Peer.ipv4(cfg.admin_cidr)
        )
        ports = list(cfg.service_ports)
        if cfg.key_pair_name:
            ports.insert(0, 22)  # Without a key pair access is SSM-only, so SSH stays closed.
        for port in ports:
            group.add_ingress_rule(peer, ec2.Port.tcp(port), f"admin access to port {port}")
        return group

    def _bucket(self) -> s3.Bucket:
        """Data and MLflow artifacts: private, encrypted, versioned, TLS only."""
        cfg = self.config
        bucket = s3.Bucket(
            self,
            "DataBucket",
            bucket_name=cfg.bucket_name,
            versioned=True,
            # SSE-S3 rather than a KMS key: same at-rest protection, no $1/month key.
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-old-versions",
                    noncurrent_version_expiration=cdk.Duration.days(cfg.noncurrent_version_days),
                    abort_incomplete_multipart_upload_after=cdk.Duration.days(7),
                    expired_object_delete_marker=True,
                )
            ],
            # Retained on stack deletion so a stray `cdk destroy` cannot lose data;
            # teardown empties and deletes it explicitly. autoDeleteObjects is not
            # used: it is a Lambda custom resource, i.e. an asset needing bootstrap.
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )
        skip_check(
            bucket,
            "CKV_AWS_18",
            "Single-tenant data and artifact bucket: public access blocked, TLS only, used by "
            "the instance role and the account's admins alone. Access logs would need a second "
            "bucket, itself unlogged, retained and torn down; CloudTrail already records "
            "bucket-level calls.",
        )
        return bucket

    def _repository(self) -> ecr.Repository:
        """Image repository: scanned on push, immutable tags, KMS, only the last N images."""
        cfg = self.config
        return ecr.Repository(
            self,
            "ImageRepository",
            repository_name=cfg.repository_name,
            image_scan_on_push=True,
            image_tag_mutability=ecr.TagMutability.IMMUTABLE,
            # KMS with ECR's AWS-managed key (aws/ecr): no $1/month key, no key policy to
            # keep; ECR grants itself use of it, so the instance role needs no KMS rights.
            encryption=ecr.RepositoryEncryption.KMS,
            lifecycle_rules=[
                ecr.LifecycleRule(
                    description=f"keep the last {cfg.keep_images} images",
                    max_image_count=cfg.keep_images,
                )
            ],
            # Same reasoning as the bucket; emptyOnDelete is a custom resource too.
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )

    def _instance_role(self) -> iam.Role:
        """Least privilege: this bucket, this repository, and SSM Session Manager."""
        role = iam.Role(
            self,
            "InstanceRole",
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            description="Health Predict host: project bucket and repository only",
            managed_policies=[
                iam.ManagedPolicy.from_aws_managed_policy_name("AmazonSSMManagedInstanceCore")
            ],
        )
        for statement in instance_policy_statements(self.bucket, self.repository):
            role.add_to_policy(statement)
        return role

    def _instance(self) -> ec2.Instance:
        """The host: encrypted gp3 root, IMDSv2 only, bootstrapped by user data."""
        cfg = self.config
        return ec2.Instance(
            self,
            "Host",
            vpc=self.vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC),
            instance_type=ec2.InstanceType(cfg.instance_type),
            machine_image=self._machine_image(),
            security_group=self.security_group,
            role=self.role,
            key_pair=ec2.KeyPair.from_key_pair_name(self, "KeyPair", cfg.key_pair_name)
            if cfg.key_pair_name
            else None,
            block_devices=[
                ec2.BlockDevice(
                    device_name=ROOT_DEVICE,
                    volume=ec2.BlockDeviceVolume.ebs(
                        cfg.root_volume_gb,
                        encrypted=True,
                        volume_type=ec2.EbsDeviceVolumeType.GP3,
                        delete_on_termination=True,
                    ),
                )
            ],
            # IMDSv2 only: session tokens defeat SSRF-style credential theft.
            http_tokens=ec2.HttpTokens.REQUIRED,
            http_endpoint=True,
            # Containers (Kind nodes, compose services) sit one network hop behind
            # the host; with IMDSv2 they need a hop limit of 2 to get role credentials.
            http_put_response_hop_limit=2,
            propagate_tags_to_volume_on_creation=True,
            user_data=ec2.UserData.custom(self._user_data()),
        )

    def _machine_image(self) -> ec2.IMachineImage:
        """A pinned AMI if configured, else the latest Amazon Linux 2023.

        The latest image is an SSM parameter that CloudFormation resolves at
        deploy time, so synthesis does no look-up and needs no credentials.
        """
        cfg = self.config
        if cfg.ami_id:
            return ec2.MachineImage.generic_linux({cfg.region: cfg.ami_id})
        arm = ec2.InstanceType(cfg.instance_type).architecture == ec2.InstanceArchitecture.ARM_64
        cpu = ec2.AmazonLinuxCpuType.ARM_64 if arm else ec2.AmazonLinuxCpuType.X86_64
        return ec2.MachineImage.latest_amazon_linux2023(cpu_type=cpu)

    def _user_data(self) -> str:
        cfg = self.config
        return render_user_data(
            {
                "STACK_NAME": self.stack_name,
                "REGION": cfg.region,
                "BUCKET_NAME": self.bucket.bucket_name,
                "REPOSITORY_URI": self.repository.repository_uri,
                "GIT_REPO_URL": cfg.git_repo_url or "",
                "GIT_REF": cfg.git_ref,
                "START_COMMAND": cfg.start_command,
            }
        )

    def _outputs(self) -> None:
        outputs = {
            "InstanceId": self.instance.instance_id,
            "PublicDnsName": self.instance.instance_public_dns_name,
            "BucketName": self.bucket.bucket_name,
            "RepositoryUri": self.repository.repository_uri,
            "RepositoryName": self.repository.repository_name,
            "AlertTopicArn": self.cost_guard.topic.topic_arn,
            "SsmSessionCommand": cdk.Fn.join(
                "", ["aws ssm start-session --target ", self.instance.instance_id]
            ),
        }
        for name, value in outputs.items():
            cdk.CfnOutput(self, name, value=value)
