"""The monthly cost estimate from infra/prices.yaml."""

from __future__ import annotations

import pytest
from healthpredict_infra.config import ConfigError
from healthpredict_infra.cost import (
    PRICES,
    Usage,
    line_items,
    load_prices,
    main,
    render,
)

pytestmark = pytest.mark.infra


@pytest.fixture(scope="module")
def prices() -> dict:
    return load_prices(PRICES)


def test_price_table_documents_region_and_date(prices: dict) -> None:
    assert prices["region"] == "us-east-1"
    assert prices["as_of"]
    assert prices["hours_per_month"] == 730
    assert "t3.large" in prices["ec2_hourly"]


def test_default_stack_left_running(prices: dict) -> None:
    usage = Usage(instance_type="t3.large", root_volume_gb=40, flow_logs=False, region="us-east-1")
    items = line_items(usage, prices)
    running = sum(item.cost(730) for item in items)
    stopped = sum(item.cost(0) for item in items)
    # 730 h x 0.0832 + 730 h x 0.005 IPv4 + 40 GB x 0.08 + 5 GB S3 + 3 GB ECR + alarm
    assert running == pytest.approx(60.736 + 3.65 + 3.2 + 0.115 + 0.3 + 0.1)
    assert stopped == pytest.approx(3.2 + 0.115 + 0.3 + 0.1)


def test_flow_logs_add_a_line(prices: dict) -> None:
    base = Usage(instance_type="t3.large", root_volume_gb=40, flow_logs=False, region="us-east-1")
    with_logs = Usage(
        instance_type="t3.large", root_volume_gb=40, flow_logs=True, region="us-east-1"
    )
    assert len(line_items(with_logs, prices)) == len(line_items(base, prices)) + 1


def test_unknown_instance_type_is_a_clear_error(prices: dict) -> None:
    usage = Usage(instance_type="x9.large", root_volume_gb=40, flow_logs=False, region="us-east-1")
    with pytest.raises(ConfigError, match=r"no price for instance type x9\.large"):
        line_items(usage, prices)


def test_render_shows_scenarios_and_teardown(prices: dict) -> None:
    usage = Usage(instance_type="t3.large", root_volume_gb=40, flow_logs=False, region="eu-west-1")
    text = render(usage, prices, hours_per_day=4)
    assert "running 24/7 (730 h)" in text and "stopped" in text
    assert "After `make infra-down` (teardown): 0.00" in text
    assert "WARNING: stack region eu-west-1 differs" in text


def test_command_reads_settings_from_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HEALTHPREDICT_INFRA_INSTANCE_TYPE", "t3.xlarge")
    assert main(["--hours-per-day", "2"]) == 0
    assert "EC2 t3.xlarge" in capsys.readouterr().out


def test_command_rejects_bad_instance_type(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HEALTHPREDICT_INFRA_INSTANCE_TYPE", "huge")
    assert main([]) == 2
    assert "not a valid EC2 instance type" in capsys.readouterr().err
