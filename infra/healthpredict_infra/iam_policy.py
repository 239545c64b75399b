"""The instance role's permissions: this bucket and this repository, nothing else."""

from __future__ import annotations

from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3

# Enough for MLflow artifacts, DVC-style data and image pull/push; no bucket
# or repository administration (policy, deletion), which stays with the deployer.
S3_BUCKET_ACTIONS = ["s3:ListBucket", "s3:GetBucketLocation"]
S3_OBJECT_ACTIONS = [
    "s3:GetObject",
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:AbortMultipartUpload",
    "s3:ListMultipartUploadParts",
]
ECR_REPOSITORY_ACTIONS = [
    "ecr:BatchCheckLayerAvailability",
    "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer",
    "ecr:DescribeImages",
    "ecr:ListImages",
    "ecr:InitiateLayerUpload",
    "ecr:UploadLayerPart",
    "ecr:CompleteLayerUpload",
    "ecr:PutImage",
]


def instance_policy_statements(
    bucket: s3.IBucket, repository: ecr.IRepository
) -> list[iam.PolicyStatement]:
    """The instance role's own permissions, each scoped to one resource.

    Args:
        bucket: The project bucket.
        repository: The project image repository.

    Returns:
        Policy statements for the instance role.
    """
    return [
        iam.PolicyStatement(
            sid="ListProjectBucket",
            actions=S3_BUCKET_ACTIONS,
            resources=[bucket.bucket_arn],
        ),
        iam.PolicyStatement(
            sid="ReadWriteProjectObjects",
            actions=S3_OBJECT_ACTIONS,
            resources=[bucket.arn_for_objects("*")],
        ),
        iam.PolicyStatement(
            sid="PullPushProjectImages",
            actions=ECR_REPOSITORY_ACTIONS,
            resources=[repository.repository_arn],
        ),
        # The only unscoped action: ECR has no resource-level permission for the
        # registry login token; what it can pull/push is limited by the statement above.
        iam.PolicyStatement(sid="EcrLogin", actions=["ecr:GetAuthorizationToken"], resources=["*"]),
    ]
