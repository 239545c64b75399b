"""Typed, validated settings for the Health Predict infrastructure stack.

Every setting is read from, in order of precedence:

1. an environment variable ``HEALTHPREDICT_INFRA_<NAME>`` (e.g.
   ``HEALTHPREDICT_INFRA_ADMIN_CIDR``), so CI and Make targets can override
   without editing files;
2. CDK context (``cdk.json`` or ``cdk -c name=value``);
3. the default below.

Invalid values raise :class:`ConfigError` at synth time, before any template
exists, so a mistake such as opening the instance to the whole internet can
never reach CloudFormation.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from healthpredict_infra.validation import ConfigError, validate_config

__all__ = ["ConfigError", "InfraConfig", "Settings", "file_context"]

ENV_PREFIX = "HEALTHPREDICT_INFRA_"
CDK_JSON = Path(__file__).resolve().parent.parent / "cdk.json"


def file_context(path: Path = CDK_JSON) -> dict[str, Any]:
    """Returns the ``context`` block of ``cdk.json``.

    The CDK CLI passes that context itself, but ``make infra-synth`` and the
    cost command run with plain Python, offline and without Node.
    """
    if not path.exists():
        return {}
    return dict(json.loads(path.read_text(encoding="utf-8")).get("context", {}))


class Settings:
    """Raw setting lookup: environment override, then CDK context, then default.

    Args:
        context: Callable returning a CDK context value or ``None``
            (``app.node.try_get_context`` or ``dict.get``).
        environ: Environment mapping; defaults to ``os.environ``.
    """

    def __init__(
        self, context: Callable[[str], Any], environ: Mapping[str, str] | None = None
    ) -> None:
        self._context = context
        self.environ = os.environ if environ is None else environ

    def raw(self, key: str) -> Any:
        """Returns the raw value for ``key`` or ``None`` when unset or empty."""
        env_value = self.environ.get(ENV_PREFIX + key.upper())
        if env_value not in (None, ""):
            return env_value
        value = self._context(key)
        return None if value in (None, "") else value

    def string(self, key: str, default: str | None = None) -> str | None:
        """Returns ``key`` as a stripped string, or ``default``."""
        value = self.raw(key)
        return default if value is None else str(value).strip()

    def number(self, key: str, default: float) -> float:
        """Returns ``key`` as a float; raises ConfigError if it is not a number."""
        value = self.raw(key)
        if value is None:
            return default
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} must be a number, got {value!r}") from None

    def integer(self, key: str, default: int) -> int:
        """Returns ``key`` as an int; raises ConfigError if it is not a whole number."""
        number = self.number(key, default)
        if number != int(number):
            raise ConfigError(f"{key} must be a whole number, got {number}")
        return int(number)

    def boolean(self, key: str, default: bool) -> bool:
        """Returns ``key`` as a bool, accepting true/false/yes/no/1/0."""
        value = self.raw(key)
        if value is None or isinstance(value, bool):
            return default if value is None else value
        text = str(value).strip().lower()
        if text in {"1", "true", "yes", "on"}:
            return True
        if text in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{key} must be true or false, got {value!r}")

    def string_list(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        """Returns ``key`` as a tuple of strings from a list or a comma-separated string."""
        value = self.raw(key)
        if value is None:
            return default
        items = value if isinstance(value, list) else str(value).split(",")
        return tuple(str(item).strip() for item in items if str(item).strip())


@dataclass(frozen=True)
class InfraConfig:
    """Validated settings of one Health Predict deployment (see docs/infrastructure.md)."""

    admin_cidr: str
    stack_name: str = "HealthPredict"
    region: str = "us-east-1"
    account: str | None = None
    availability_zones: tuple[str, ...] = ()
    instance_type: str = "t3.large"
    root_volume_gb: int = 40
    ami_id: str | None = None
    key_pair_name: str | None = None
    service_ports: tuple[int, ...] = (8000, 5000, 8080, 3000)
    vpc_cidr: str = "10.42.0.0/16"
    flow_logs: bool = False
    bucket_name: str | None = None
    repository_name: str = "healthpredict"
    keep_images: int = 10
    noncurrent_version_days: int = 30
    budget_amount: float = 25.0
    alert_email: str | None = None
    idle_hours: int = 2
    idle_cpu_percent: float = 10.0
    git_repo_url: str | None = None
    git_ref: str = "main"
    start_command: str = "make up"
    allow_world_admin: bool = False

    def __post_init__(self) -> None:
        validate_config(self)

    @classmethod
    def from_settings(cls, settings: Settings) -> InfraConfig:
        """Builds and validates the config; raises ConfigError on any bad value."""
        stack_name = settings.string("stack_name", cls.stack_name) or cls.stack_name
        ports = settings.string_list("service_ports", tuple(map(str, cls.service_ports)))
        return cls(  # Every field, in declaration order.
            admin_cidr=_required_admin_cidr(settings),
            stack_name=stack_name,
            region=_default_region(settings),
            # The CDK CLI sets CDK_DEFAULT_* from the caller's credentials.
            account=settings.string("account") or settings.environ.get("CDK_DEFAULT_ACCOUNT"),
            availability_zones=settings.string_list("availability_zones", ()),
            instance_type=settings.string("instance_type", cls.instance_type) or "",
            root_volume_gb=settings.integer("root_volume_gb", cls.root_volume_gb),
            ami_id=settings.string("ami_id"),
            key_pair_name=settings.string("key_pair_name"),
            service_ports=_parse_ports(ports),
            vpc_cidr=settings.string("vpc_cidr", cls.vpc_cidr) or cls.vpc_cidr,
            flow_logs=settings.boolean("flow_logs", cls.flow_logs),
            bucket_name=settings.string("bucket_name"),
            # Derived from the stack name so two stacks in one account do not collide.
            repository_name=settings.string("repository_name") or stack_name.lower(),
            keep_images=settings.integer("keep_images", cls.keep_images),
            noncurrent_version_days=settings.integer("noncurrent_version_days", 30),
            budget_amount=settings.number("budget_amount", cls.budget_amount),
            alert_email=settings.string("alert_email"),
            idle_hours=settings.integer("idle_hours", cls.idle_hours),
            idle_cpu_percent=settings.number("idle_cpu_percent", cls.idle_cpu_percent),
            git_repo_url=settings.string("git_repo_url"),
            git_ref=settings.string("git_ref", cls.git_ref) or cls.git_ref,
            start_command=settings.string("start_command", cls.start_command) or "",
            allow_world_admin=settings.boolean("allow_world_admin", cls.allow_world_admin),
        )


def _required_admin_cidr(settings: Settings) -> str:
    """The admin CIDR; there is deliberately no default, least of all 0.0.0.0/0."""
    admin_cidr = settings.string("admin_cidr")
    if admin_cidr is None:
        raise ConfigError(
            "admin_cidr is required: the CIDR allowed to reach SSH and the service "
            "ports, e.g. your public IP as 203.0.113.7/32. Set "
            f"{ENV_PREFIX}ADMIN_CIDR or run cdk with -c admin_cidr=<cidr>."
        )
    return admin_cidr


def _default_region(settings: Settings) -> str:
    """Region from the settings, else the CDK CLI's, else the price table's region."""
    return (
        settings.string("region")
        or settings.environ.get("CDK_DEFAULT_REGION")
        or InfraConfig.region
    )


def _parse_ports(values: tuple[str, ...]) -> tuple[int, ...]:
    """Converts port strings to ints; raises ConfigError on anything else."""
    try:
        return tuple(int(value) for value in values)
    except ValueError:
        raise ConfigError(f"service_ports must be integers, got {list(values)}") from None
