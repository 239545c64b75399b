"""The HTML dashboard and the views it shares with the PNG report, on hand-made histories."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pandas as pd
import pytest
from plotly.offline import get_plotlyjs

from healthpredict.monitoring.history import RunHistory
from healthpredict.reporting import dashboard
from healthpredict.reporting.dashboard import CHART_IDS, write_dashboard
from healthpredict.reporting.timeline_views import (
    active_spans,
    describe_policy,
    drift_matrix,
    drift_severity,
    first_onset,
    scenario_lanes,
    summarise_run,
    timeline_events,
)
from tests.reporting.histories import QUARANTINE_REASON, SHIFTED, make_history, make_runs


def test_dashboard_is_one_self_contained_file(runs: list[RunHistory], tmp_path: Path) -> None:
    page = write_dashboard(runs, "default-drift", tmp_path / "out" / "dashboard.html")
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]*\bsrc\s*=", text, re.IGNORECASE)
    assert not re.search(r"<link[^>]*\bhref\s*=\s*[\"']?https?:", text, re.IGNORECASE)
    assert get_plotlyjs()[:2000] in text  # the library itself is inlined
    for chart_id in CHART_IDS:
        assert f'id="{chart_id}"' in text
    assert "Health Predict: run default-drift" in text
    assert "retrain on drift alarm, cooldown 1 batch" in text


def test_table_lists_every_batch_and_the_quarantine_reason(
    runs: list[RunHistory], tmp_path: Path
) -> None:
    text = write_dashboard(runs, "default-drift", tmp_path / "d.html").read_text()
    table = text[text.index('<section id="batches">') :]
    rows = re.findall(r'<tr class="(completed|quarantined)"[^>]*>(.*?)</tr>', table)
    assert [status for status, _ in rows] == ["completed"] * 2 + ["quarantined"] + ["completed"] * 4
    assert QUARANTINE_REASON in rows[2][1]
    assert "labels pending" in rows[6][1]  # batch 7: labels not known yet
    assert "0.627 [0.606, 0.646]" in rows[3][1]  # realised AUC with its interval


def test_text_from_the_store_is_escaped(tmp_path: Path) -> None:
    run = make_history("drift", scenario="<b>x</b>")
    batches = run.batches.copy()
    batches.loc[batches["status"] == "quarantined", "quarantine_reason"] = "<script>bad()</script>"
    run = dataclasses.replace(run, batches=batches, name="<i>run</i>")
    text = write_dashboard([run], "<i>run</i>", tmp_path / "d.html").read_text()
    for raw in ("<b>x</b>", "<script>bad()", "<i>run</i>"):
        assert raw not in text
    assert "&lt;b&gt;x&lt;/b&gt;" in text
    assert "&lt;script&gt;bad()&lt;/script&gt;" in text


def test_write_is_atomic(
    runs: list[RunHistory], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "dashboard.html"
    path.write_text("previous dashboard")
    write_dashboard(runs, "default-never", path)
    assert "default-never" in path.read_text()

    def broken(*_: object, **__: object) -> str:
        raise RuntimeError("rendering failed")

    monkeypatch.setattr(dashboard, "_page", broken)
    path.write_text("previous dashboard")
    with pytest.raises(RuntimeError):
        write_dashboard(runs, "default-never", path)
    assert path.read_text() == "previous dashboard"
    assert sorted(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_unknown_main_run_is_refused(runs: list[RunHistory], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="default-never"):
        write_dashboard(runs, "missing", tmp_path / "d.html")


def edge_histories() -> dict[str, RunHistory]:
    """Histories that are legal but thin: what a first or a broken run leaves."""
    return {
        "single batch": make_history("drift", n_batches=1, onset=None, quarantined=()),
        "all quarantined": make_history("never", n_batches=3, quarantined=(1, 2, 3)),
        "no feature drift rows": make_history("scheduled", feature_drift=False),
        "no scenario, all labelled": make_history("drift", onset=None, labels_pending=0),
        "failed retrain, no reference": _failed_retrain(),
    }


def _failed_retrain() -> RunHistory:
    """The retrain at batch 4 failed before a challenger existed; no reference AUC stored."""
    run = make_history("drift")
    batches = run.batches.copy()
    batches.loc[batches["batch"] == 4, ["outcome", "new_version"]] = ["failed", math.nan]
    batches["model_version"] = "1"
    return dataclasses.replace(run, batches=batches, reference_auc=math.nan)


@pytest.mark.parametrize("case", list(edge_histories()))
def test_thin_histories_still_render(case: str, tmp_path: Path) -> None:
    run = edge_histories()[case]
    text = write_dashboard([run], run.name, tmp_path / "d.html").read_text()
    for chart_id in CHART_IDS:
        assert f'id="{chart_id}"' in text
    assert len(re.findall(r'<tr class="(?:completed|quarantined)"', text)) == len(run.batches)


def test_summary_of_a_run() -> None:
    never, scheduled, drift = (summarise_run(run) for run in make_runs())
    assert (drift.retrains, drift.promotions, drift.quarantined) == (1, 1, 1)
    assert (scheduled.retrains, scheduled.promotions) == (3, 2)
    assert (never.retrains, never.promotions) == (0, 0)
    realised = make_history("drift").batches.set_index("batch")["realised_auc"]
    assert drift.mean_auc_after_onset == pytest.approx(realised.loc[[4, 5, 6]].mean())
    assert drift.mean_auc == pytest.approx(realised.dropna().mean())  # NaNs are left out
    assert drift.mean_auc_after_onset > never.mean_auc_after_onset
    assert math.isnan(summarise_run(make_history(onset=None)).mean_auc_after_onset)


def test_failed_retrain_is_an_event_without_challenger(tmp_path: Path) -> None:
    run = _failed_retrain()
    events = timeline_events(run.batches)
    assert events.loc[events["batch"] == 4, "text"].item().startswith("batch 4: retrain failed")
    text = write_dashboard([run], run.name, tmp_path / "d.html").read_text()
    assert "nan" not in re.sub(r"<script.*?</script>", "", text, flags=re.DOTALL).lower()


def test_events_and_onset() -> None:
    batches = make_history("scheduled").batches
    assert first_onset(batches) == 4
    events = timeline_events(batches)
    assert list(zip(events["batch"], events["kind"], strict=True)) == [
        (2, "retrain"),
        (3, "quarantined"),
        (4, "promoted"),
        (6, "promoted"),
    ]
    assert QUARANTINE_REASON in events.loc[events["batch"] == 3, "text"].item()
    assert first_onset(make_history(onset=None).batches) is None


def test_drift_severity_is_above_one_exactly_when_off_the_reference() -> None:
    frame = pd.DataFrame(
        {  # by the distribution; below; by a quality check alone; capped; a constant field
            "statistic": [0.2, 0.05, 0.001, 0.5, 0.0],
            "threshold": [0.1, 0.1, 0.01, 0.01, 0.0],
            "drifted": [True, False, True, True, False],
        }
    )
    assert drift_severity(frame).tolist() == pytest.approx([2.0, 0.5, 1.0, 3.0, 0.0])


def test_drift_matrix_puts_the_shifted_features_on_top() -> None:
    run = make_history("never")
    matrix = drift_matrix(run)
    assert list(matrix.columns) == list(range(1, 8))
    assert set(matrix.index[: len(SHIFTED)]) == set(SHIFTED)
    assert matrix[3].isna().all()  # the quarantined batch has no drift rows
    assert drift_matrix(make_history(feature_drift=False)).empty


def test_overlapping_scenarios_get_one_lane_each() -> None:
    batches = pd.DataFrame(
        {"batch": range(1, 8), "scenarios": ["", "a", "b", "c", "c, d", "c", None]}
    )
    assert scenario_lanes(batches) == {"a": [(2, 2)], "b": [(3, 3)], "c": [(4, 6)], "d": [(5, 5)]}
    assert active_spans(batches) == [(2, 6)]


def test_policy_is_named_once() -> None:
    run = make_history("drift")
    assert describe_policy(run) == "drift: retrain on drift alarm, cooldown 1 batch"
    stored = dataclasses.replace(run, policy_text="drift: retrain on alarm, cooldown 1")
    assert describe_policy(stored) == "drift: retrain on alarm, cooldown 1"
