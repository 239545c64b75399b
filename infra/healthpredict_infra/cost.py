"""Estimated monthly cost of the stack as configured, from ``infra/prices.yaml``.

Run from ``infra/`` (or via ``make infra-cost``)::

    python -m healthpredict_infra.cost --hours-per-day 4

It reads the same settings as the CDK app (``cdk.json`` context and
``HEALTHPREDICT_INFRA_*`` overrides) and prints three scenarios: left
running all month, running only the given hours a day, and stopped. After
``make infra-down`` the cost is zero: nothing is left.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from healthpredict_infra.config import ConfigError, InfraConfig, Settings, file_context
from healthpredict_infra.validation import validate_instance_type

PRICES = Path(__file__).resolve().parent.parent / "prices.yaml"
DAYS_PER_MONTH = 365 / 12


@dataclass(frozen=True)
class Usage:
    """What the estimate depends on: the configured stack and assumed usage."""

    instance_type: str
    root_volume_gb: int
    flow_logs: bool
    region: str
    s3_gb: float = 5.0
    ecr_gb: float = 3.0
    flow_log_gb: float = 1.0


@dataclass(frozen=True)
class LineItem:
    """One priced component: a fixed monthly part and a part per running hour."""

    name: str
    monthly: float
    per_running_hour: float = 0.0

    def cost(self, running_hours: float) -> float:
        """Returns the monthly cost when the instance runs ``running_hours``."""
        return self.monthly + self.per_running_hour * running_hours


def load_prices(path: Path = PRICES) -> dict[str, Any]:
    """Reads the price table; raises ConfigError if it lacks a required entry."""
    prices = yaml.safe_load(path.read_text(encoding="utf-8"))
    required = {"region", "as_of", "hours_per_month", "ec2_hourly", "ebs_gp3_gb_month"}
    missing = required - set(prices)
    if missing:
        raise ConfigError(f"price table {path} lacks {sorted(missing)}")
    return dict(prices)


def line_items(usage: Usage, prices: Mapping[str, Any]) -> list[LineItem]:
    """Prices every billable part of the stack.

    Args:
        usage: Configured sizes and assumed storage volumes.
        prices: The price table.

    Returns:
        Line items; free parts (VPC, subnets, internet gateway, IAM, SNS,
        the budget) are listed at zero so the reader sees they were counted.

    Raises:
        ConfigError: If the instance type is not in the price table.
    """
    hourly = instance_hourly(usage, prices)
    items = [
        LineItem(f"EC2 {usage.instance_type} (on-demand)", 0.0, hourly),
        LineItem("Public IPv4 address", 0.0, float(prices["public_ipv4_hourly"])),
        *_storage_items(usage, prices),
        LineItem("CloudWatch idle-stop alarm", float(prices["cloudwatch_alarm_month"])),
        LineItem("AWS Budgets budget", float(prices["budget_month"])),
        LineItem("SNS alert topic", float(prices["sns_month"])),
        LineItem("VPC, public subnets, internet gateway, IAM", 0.0),
    ]
    if usage.flow_logs:
        per_gb = prices["cloudwatch_logs_ingest_gb"] + prices["cloudwatch_logs_storage_gb_month"]
        name = f"VPC flow logs ~{usage.flow_log_gb:g} GB"
        items.append(LineItem(name, usage.flow_log_gb * per_gb))
    return items


def _storage_items(usage: Usage, prices: Mapping[str, Any]) -> list[LineItem]:
    """Billed every month whether the instance runs or not."""
    return [
        LineItem(
            f"EBS gp3 root volume {usage.root_volume_gb} GB",
            usage.root_volume_gb * float(prices["ebs_gp3_gb_month"]),
        ),
        LineItem(
            f"S3 bucket ~{usage.s3_gb:g} GB",
            usage.s3_gb * float(prices["s3_standard_gb_month"]),
        ),
        LineItem(
            f"ECR images ~{usage.ecr_gb:g} GB",
            usage.ecr_gb * float(prices["ecr_storage_gb_month"]),
        ),
    ]


def instance_hourly(usage: Usage, prices: Mapping[str, Any]) -> float:
    """On-demand hourly price of the instance type; ConfigError if not in the table."""
    hourly = prices["ec2_hourly"].get(usage.instance_type)
    if hourly is None:
        known = ", ".join(sorted(prices["ec2_hourly"]))
        raise ConfigError(
            f"no price for instance type {usage.instance_type} in the price table; "
            f"add it to infra/prices.yaml or pick one of: {known}"
        )
    return float(hourly)


def render(usage: Usage, prices: Mapping[str, Any], hours_per_day: float) -> str:
    """Formats the estimate as a plain-text table with three scenarios."""
    full = float(prices["hours_per_month"])
    used = min(full, hours_per_day * DAYS_PER_MONTH)
    scenarios = [
        (f"running 24/7 ({full:g} h)", full),
        (f"{hours_per_day:g} h/day ({used:.0f} h)", used),
        ("stopped", 0.0),
    ]
    items = line_items(usage, prices)
    width = max(len(item.name) for item in items) + 2
    header = "".join(f"{label:>22}" for label, _ in scenarios)
    lines = [
        f"Health Predict - estimated monthly cost, {prices['currency']}",
        f"prices: {prices['region']} list prices as of {prices['as_of']}, "
        f"transcribed {prices.get('transcribed', '?')} (infra/prices.yaml: verify before relying)",
        "",
        f"{'item':<{width}}{header}",
    ]
    for item in items:
        lines.append(
            f"{item.name:<{width}}" + "".join(f"{item.cost(h):>22.2f}" for _, h in scenarios)
        )
    totals = "".join(f"{sum(i.cost(h) for i in items):>22.2f}" for _, h in scenarios)
    lines += [f"{'total':<{width}}{totals}", "", *_notes(usage, prices)]
    return "\n".join(lines)


def _notes(usage: Usage, prices: Mapping[str, Any]) -> list[str]:
    nat = float(prices["nat_gateway_hourly"]) * float(prices["hours_per_month"])
    notes = [
        "After `make infra-down` (teardown): 0.00 - nothing is left.",
        f"Not created on purpose: a NAT gateway would add {nat:.2f}/month before traffic.",
        "Not estimated: data transfer out, S3/ECR requests, burstable CPU credits, tax.",
    ]
    if usage.region != prices["region"]:
        notes.insert(
            0,
            f"WARNING: stack region {usage.region} differs from the table's {prices['region']}.",
        )
    return notes


def usage_from_settings(settings: Settings, args: argparse.Namespace) -> Usage:
    """Builds the usage from the stack's settings and the command-line assumptions."""
    return Usage(
        instance_type=validate_instance_type(
            settings.string("instance_type", InfraConfig.instance_type) or ""
        ),
        root_volume_gb=settings.integer("root_volume_gb", InfraConfig.root_volume_gb),
        flow_logs=settings.boolean("flow_logs", InfraConfig.flow_logs),
        region=settings.string("region", InfraConfig.region) or InfraConfig.region,
        s3_gb=args.s3_gb,
        ecr_gb=args.ecr_gb,
        flow_log_gb=args.flow_log_gb,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Prints the estimate; returns 2 on a configuration error."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--hours-per-day", type=float, default=4.0, help="assumed running hours a day"
    )
    parser.add_argument("--s3-gb", type=float, default=5.0, help="assumed data and artifacts in S3")
    parser.add_argument("--ecr-gb", type=float, default=3.0, help="assumed image storage in ECR")
    parser.add_argument("--flow-log-gb", type=float, default=1.0, help="assumed flow logs a month")
    parser.add_argument("--prices", type=Path, default=PRICES, help="price table (YAML)")
    args = parser.parse_args(argv)
    try:
        if not 0 <= args.hours_per_day <= 24:
            raise ConfigError(f"--hours-per-day must be between 0 and 24, got {args.hours_per_day}")
        usage = usage_from_settings(Settings(file_context().get), args)
        print(render(usage, load_prices(args.prices), args.hours_per_day))
    except ConfigError as err:
        print(f"healthpredict-infra cost: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
