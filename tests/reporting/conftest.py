"""Fixtures of the reporting tests: the three hand-made runs."""

from __future__ import annotations

import pytest

from healthpredict.monitoring.history import RunHistory
from tests.reporting.histories import make_runs


@pytest.fixture
def runs() -> list[RunHistory]:
    """never / scheduled / drift over seven batches; batch 3 quarantined, batch 7 unlabelled."""
    return make_runs()
