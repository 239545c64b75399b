"""The static PNG report: every view written, also for thin histories."""

from __future__ import annotations

from pathlib import Path

import pytest

from healthpredict.monitoring.history import RunHistory
from healthpredict.reporting.timeline_plots import write_report_pngs
from tests.reporting.test_dashboard import edge_histories

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NAMES = ["drift_heatmap", "auc_timeline", "prediction_distribution", "policy_comparison"]


def test_pngs_of_the_three_policies(runs: list[RunHistory], tmp_path: Path) -> None:
    paths = write_report_pngs(runs, "default-drift", tmp_path / "pngs")
    assert [path.stem for path in paths] == NAMES
    for path in paths:
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        assert path.stat().st_size > 20_000, f"{path.name} looks empty"


@pytest.mark.parametrize("case", list(edge_histories()))
def test_thin_histories_still_plot(case: str, tmp_path: Path) -> None:
    run = edge_histories()[case]
    paths = write_report_pngs([run], run.name, tmp_path)
    assert all(path.stat().st_size > 5_000 for path in paths)
