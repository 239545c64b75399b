"""The main job (`healthpredict demo`) end to end on the real extract, with a reduced budget.

The README's command runs the full budget; here the search is 4 trials (its time budget is
only a ceiling, generous for a busy CI machine), the bootstrap 50 rounds, and the scheduled
what-if retrains every third batch, so the job fits in a few minutes. Everything else is the
real thing: data, search, registry, the service as its own process, outcomes, monitoring
windows, dashboard.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from healthpredict.cli import app
from healthpredict.reporting.charts import CHARTS
from healthpredict.reporting.timeline_plots import find_browser

pytestmark = [pytest.mark.real_data, pytest.mark.integration]

QUICK_POLICIES = """\
never: {kind: never}
scheduled: {kind: scheduled, every: 3}
drift:
  kind: drift
  signals: [prediction_drift, estimated_performance, realised_performance, calibration]
  cooldown: 1
"""


def test_main_job_runs_end_to_end(real_source: str, tmp_path: Path) -> None:
    policies = tmp_path / "policies.yaml"
    policies.write_text(QUICK_POLICIES)
    env = {
        "HEALTHPREDICT_DATA_SOURCE": real_source,
        "HEALTHPREDICT_DATA_DIR": str(tmp_path / "data"),
        "HEALTHPREDICT_POLICIES_FILE": str(policies),
        "HEALTHPREDICT_TUNE_TRIALS": "4",
        "HEALTHPREDICT_TUNE_TIME_BUDGET_SECONDS": "400",
        "HEALTHPREDICT_TUNE_FOLDS": "2",
        "HEALTHPREDICT_CV_FOLDS": "3",
        "HEALTHPREDICT_BOOTSTRAP_ROUNDS": "50",
    }
    result = CliRunner().invoke(app, ["demo"], env=env, catch_exceptions=False)
    output = result.output
    assert result.exit_code == 0, output[-3000:]
    for step in ("[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]"):
        assert step in output
    table = output[output.index("run default-drift") :]
    for window in range(1, 8):
        assert f"w00{window} (" in table
    assert "quarantined: w003" in table
    assert "replay: " in table and "requests/s" in table  # through the real service
    dashboard = Path(output.rsplit("dashboard: ", 1)[1].splitlines()[0].strip())
    assert dashboard.is_file() and dashboard.stat().st_size > 100_000
    pngs = list((tmp_path / "data" / "reports" / "simulation").glob("*.png"))
    # The PNGs are exports of the dashboard's figures through Chromium: none without one.
    assert len(pngs) == (len(CHARTS) if find_browser() else 0)
