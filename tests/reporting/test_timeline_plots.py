"""The static PNG report: every chart exported, also for thin histories."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from healthpredict.monitoring.history import RunHistory
from healthpredict.reporting import timeline_plots
from healthpredict.reporting.charts import CHARTS
from healthpredict.reporting.timeline_plots import (
    NO_BROWSER,
    PngExportError,
    find_browser,
    write_report_pngs,
)
from tests.reporting.system_tools import require
from tests.reporting.test_dashboard import edge_histories

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NAMES = [
    "auc_timeline",
    "drift_heatmap",
    "prediction_distribution",
    "equity_timeline",
    "policy_comparison",
]


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> str:
    """The Chrome or Chromium the export finds (Debian's, where ``.ci/run`` installs it)."""
    monkeypatch.delenv("BROWSER_PATH", raising=False)
    found = find_browser()
    require(
        found is not None, "no Chrome or Chromium (Debian package chromium; .ci/run installs it)"
    )
    assert found is not None
    return found


@pytest.mark.timeout(120)
def test_pngs_of_the_three_policies(browser: str, runs: list[RunHistory], tmp_path: Path) -> None:
    started = time.perf_counter()
    paths = write_report_pngs(runs, "default-drift", tmp_path / "pngs")
    elapsed = time.perf_counter() - started
    assert [path.stem for path in paths] == NAMES == [chart.png for chart in CHARTS]
    for path in paths:
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        assert path.stat().st_size > 20_000, f"{path.name} looks empty"
    assert elapsed < 60, f"the PNGs took {elapsed:.1f} s"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", list(edge_histories()))
def test_thin_histories_still_plot(browser: str, case: str, tmp_path: Path) -> None:
    run = edge_histories()[case]
    paths = write_report_pngs([run], run.name, tmp_path)
    assert len(paths) == len(CHARTS)
    assert all(path.stat().st_size > 5_000 for path in paths)


def test_without_a_browser_the_pngs_are_skipped_with_a_warning(
    runs: list[RunHistory],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(timeline_plots, "find_browser", lambda: None)
    with caplog.at_level(logging.WARNING, logger=timeline_plots.__name__):
        assert write_report_pngs(runs, "default-drift", tmp_path) == []
    assert caplog.messages == [NO_BROWSER]
    assert not list(tmp_path.iterdir())


def test_a_wrong_browser_path_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "no-chrome"
    monkeypatch.setenv("BROWSER_PATH", str(missing))
    with pytest.raises(PngExportError, match=r"BROWSER_PATH=.*no-chrome.*not an executable"):
        find_browser()


@pytest.mark.timeout(120)
def test_a_browser_that_does_not_start_is_named(
    runs: list[RunHistory], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BROWSER_PATH", "/bin/true")  # exits at once, as a broken one would
    with pytest.raises(PngExportError, match=r"/bin/true did not render the PNGs"):
        write_report_pngs(runs, "default-drift", tmp_path)


def test_unknown_main_run_is_refused(runs: list[RunHistory], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="default-never"):
        write_report_pngs(runs, "missing", tmp_path)
