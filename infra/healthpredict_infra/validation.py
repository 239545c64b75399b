"""Validation of the infrastructure settings; every message says how to fix it.

Called from ``InfraConfig.__post_init__``, so an invalid setting stops the CDK
app before any template is written.
"""

from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from healthpredict_infra.config import InfraConfig

# <family><generation>[options].<size>, e.g. t3.large, t4g.xlarge, m7i-flex.large.
_INSTANCE_TYPE = re.compile(
    r"^[a-z]+[0-9][a-z0-9-]*\.(nano|micro|small|medium|large|[0-9]*xlarge|metal(-[0-9]+xl)?)$"
)
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_REPOSITORY_NAME = re.compile(r"^(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*$")
_STACK_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,127}$")
_REGION = re.compile(r"^[a-z]{2}(-gov)?-[a-z]+-[0-9]$")
_ACCOUNT = re.compile(r"^[0-9]{12}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names it and says how to fix it."""


def validate_config(cfg: InfraConfig) -> None:
    """Raises ConfigError for the first invalid setting of ``cfg``."""
    _validate_identity(cfg)
    _validate_network(cfg)
    _validate_compute(cfg)
    _validate_storage(cfg)
    _validate_cost_guard(cfg)
    _validate_bootstrap(cfg)


def validate_instance_type(value: str) -> str:
    """Checks an EC2 instance type's shape (``t3.large``); returns it unchanged."""
    if not _INSTANCE_TYPE.match(value):
        raise ConfigError(
            f"instance_type {value!r} is not a valid EC2 instance type; expected "
            "<family>.<size> such as t3.large, t3a.xlarge or m7i.large"
        )
    return value


def _validate_identity(cfg: InfraConfig) -> None:
    if not _STACK_NAME.match(cfg.stack_name):
        raise ConfigError(
            f"stack_name {cfg.stack_name!r} must start with a letter and contain only "
            "letters, digits and hyphens (max 128 characters)"
        )
    if not _REGION.match(cfg.region):
        raise ConfigError(f"region {cfg.region!r} is not an AWS region such as us-east-1")
    if cfg.account is not None and not _ACCOUNT.match(cfg.account):
        raise ConfigError(f"account {cfg.account!r} must be a 12-digit AWS account id")
    for zone in cfg.availability_zones:
        if not zone.startswith(cfg.region):
            raise ConfigError(f"availability zone {zone!r} is not in region {cfg.region}")


def _validate_network(cfg: InfraConfig) -> None:
    try:
        network = ipaddress.ip_network(cfg.admin_cidr, strict=True)
    except ValueError as err:
        raise ConfigError(f"admin_cidr {cfg.admin_cidr!r} is not a valid CIDR: {err}") from None
    if network.prefixlen == 0 and not cfg.allow_world_admin:
        raise ConfigError(
            f"admin_cidr {cfg.admin_cidr} would open SSH and the service ports to the "
            "whole internet. Use your own address (e.g. 203.0.113.7/32); if you really "
            "mean it, also set allow_world_admin=true."
        )
    if not all(0 < port < 65536 for port in cfg.service_ports):
        raise ConfigError(f"service_ports must be between 1 and 65535, got {cfg.service_ports}")
    try:
        vpc = ipaddress.ip_network(cfg.vpc_cidr, strict=True)
    except ValueError as err:
        raise ConfigError(f"vpc_cidr {cfg.vpc_cidr!r} is not a valid CIDR: {err}") from None
    if vpc.version != 4 or not 16 <= vpc.prefixlen <= 22:
        raise ConfigError(f"vpc_cidr {cfg.vpc_cidr} must be an IPv4 block between /16 and /22")


def _validate_compute(cfg: InfraConfig) -> None:
    validate_instance_type(cfg.instance_type)
    if not 20 <= cfg.root_volume_gb <= 1024:
        raise ConfigError(
            f"root_volume_gb must be between 20 and 1024 (Docker images and the Kind "
            f"node need room), got {cfg.root_volume_gb}"
        )
    if cfg.ami_id is not None and not re.match(r"^ami-[0-9a-f]{8,17}$", cfg.ami_id):
        raise ConfigError(f"ami_id {cfg.ami_id!r} is not an AMI id such as ami-0abcdef1234567890")


def _validate_storage(cfg: InfraConfig) -> None:
    if cfg.bucket_name is not None and (
        not _BUCKET_NAME.match(cfg.bucket_name) or ".." in cfg.bucket_name
    ):
        raise ConfigError(
            f"bucket_name {cfg.bucket_name!r} is not a valid S3 bucket name "
            "(3-63 lowercase letters, digits, dots and hyphens)"
        )
    if not _REPOSITORY_NAME.match(cfg.repository_name) or len(cfg.repository_name) < 2:
        raise ConfigError(
            f"repository_name {cfg.repository_name!r} is not a valid ECR repository name "
            "(lowercase letters, digits and . _ - /)"
        )
    if not 1 <= cfg.keep_images <= 1000:
        raise ConfigError(f"keep_images must be between 1 and 1000, got {cfg.keep_images}")
    if cfg.noncurrent_version_days < 1:
        raise ConfigError(
            f"noncurrent_version_days must be at least 1, got {cfg.noncurrent_version_days}"
        )


def _validate_cost_guard(cfg: InfraConfig) -> None:
    if not cfg.budget_amount > 0:
        raise ConfigError(
            f"budget_amount must be greater than 0 USD, got {cfg.budget_amount}; "
            "the budget is the last line of defence against a forgotten instance"
        )
    # 5-minute datapoints x 12 per hour; CloudWatch caps an alarm's window at one day.
    if not 1 <= cfg.idle_hours <= 24:
        raise ConfigError(f"idle_hours must be between 1 and 24, got {cfg.idle_hours}")
    if not 0 < cfg.idle_cpu_percent < 100:
        raise ConfigError(f"idle_cpu_percent must be between 0 and 100, got {cfg.idle_cpu_percent}")
    if cfg.alert_email is not None and not _EMAIL.match(cfg.alert_email):
        raise ConfigError(f"alert_email {cfg.alert_email!r} is not an e-mail address")


def _validate_bootstrap(cfg: InfraConfig) -> None:
    # These values are pasted into single-quoted shell strings in the user data.
    if cfg.git_repo_url is not None and not re.match(
        r"^(https://|ssh://|git@)[^\s']+$", cfg.git_repo_url
    ):
        raise ConfigError(
            f"git_repo_url {cfg.git_repo_url!r} must be an https://, ssh:// or git@ URL "
            "without spaces or quotes"
        )
    if not re.match(r"^[A-Za-z0-9._/-]+$", cfg.git_ref):
        raise ConfigError(f"git_ref {cfg.git_ref!r} is not a branch or tag name")
    if not cfg.start_command.strip() or "'" in cfg.start_command or "\n" in cfg.start_command:
        raise ConfigError("start_command must be one non-empty line without single quotes")
