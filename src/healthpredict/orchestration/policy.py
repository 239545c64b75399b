"""Retry, timeout and scheduling defaults shared by every Health Predict DAG.

Tasks override ``retries`` and ``execution_timeout`` where the default is wrong for them (a
check that cannot succeed on a retry, a search with its own time budget); the DAG integrity
tests require both on every task.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

# A fixed date in the past: with catchup off, it only says "schedulable from now on".
START_DATE = datetime(2024, 1, 1, tzinfo=UTC)
OWNER = "healthpredict"
TAGS = ("healthpredict",)


def default_args(**overrides: Any) -> dict[str, Any]:
    """Fresh default_args: two retries two minutes apart (a restarted server, a network blip),
    doubling up to 15 minutes, and an hour at most per task unless the task says otherwise."""
    values: dict[str, Any] = {
        "owner": OWNER,
        "retries": 2,
        "retry_delay": timedelta(minutes=2),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=15),
        "execution_timeout": timedelta(hours=1),
    }
    return {**values, **overrides}
