"""The per-group view: the chart of group figures over time and the tables naming group alarms."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import plotly.graph_objects as go

from healthpredict.reporting.dashboard import write_dashboard
from healthpredict.reporting.equity_chart import equity_figure
from healthpredict.reporting.summary import format_batch_table
from tests.reporting.histories import HARMED, make_history


def _traces(figure: go.Figure, name: str) -> list[go.Scatter]:
    return [trace for trace in figure.data if trace.name == name]


def test_each_measured_group_is_drawn_with_its_interval_against_all_patients() -> None:
    run = make_history("drift")
    figure = equity_figure(run)
    # Per attribute a header, an AUC row and a calibration row (the scenario lane on top).
    titles = [axis.title.text for axis in figure.select_yaxes() if axis.title.text]
    assert titles == ["ROC-AUC", "observed −<br>predicted"] * 2
    headers = [a.text for a in figure.layout.annotations if a.text.startswith("<b>")]
    assert [h.split("</b>")[0] for h in headers] == ["<b>age", "<b>gender"]
    [auc, gap] = _traces(figure, "age [60-70)")
    measured = run.groups[(run.groups["group"] == "[60-70)")].sort_values("window")
    assert [round(x) for x in auc.x] == measured["window"].tolist()
    assert list(auc.y) == measured["auc"].tolist()
    assert list(auc.error_y.arrayminus) == (measured["auc"] - measured["auc_low"]).tolist()
    assert list(gap.y) == measured["calibration_gap"].tolist()
    assert len(_traces(figure, "all patients")) == 4  # the reference on every row
    # Points of one window sit side by side, not on top of each other.
    [other, _] = _traces(figure, "age [50-60)")
    assert other.x[0] < auc.x[0] and round(other.x[0]) == round(auc.x[0])


def test_alarmed_windows_are_ringed_and_too_few_groups_named_not_drawn() -> None:
    run = make_history("drift")
    figure = equity_figure(run)
    rings = [t for t in figure.data if t.name == "equity alarm" and t.legendgroup == "age [70-80)"]
    assert len(rings) == 1  # the alarm is about its AUC: no ring on the calibration row
    harmed = run.groups[run.groups["status"] == "alarm"]
    assert [round(x) for x in rings[0].x] == sorted(harmed["window"]) == [4, 5, 6]
    assert "ROC-AUC below all patients" in rings[0].hovertext[0]
    assert _traces(figure, "equity alarm on the group")  # its legend entry
    assert not _traces(figure, "gender Unknown/Invalid")
    notes = [a.text for a in figure.layout.annotations]
    assert "<b>gender</b>   too few to tell (not drawn) in some windows: Unknown/Invalid" in notes


def test_without_group_figures_the_chart_says_why() -> None:
    figure = equity_figure(make_history("drift", groups=False))
    assert not figure.data
    assert any("no group figures recorded" in a.text for a in figure.layout.annotations)


def test_group_text_from_the_store_is_escaped() -> None:
    run = make_history("drift")
    groups = run.groups.copy()
    groups.loc[groups["group"] == "[60-70)", "group"] = "<b>x</b>"
    figure = equity_figure(dataclasses.replace(run, groups=groups))
    assert _traces(figure, "age &lt;b&gt;x&lt;/b&gt;")


def test_the_window_tables_name_the_group_alarms(tmp_path: Path) -> None:
    run = make_history("drift")
    name = " ".join(HARMED)
    table = format_batch_table(run).splitlines()
    assert "group alarms" in table[1]
    lines = {int(re.search(r"batch_(\d+)", line)[1]): line for line in table[2:-1]}
    assert [b for b, line in lines.items() if line.endswith(name)] == [4, 5, 6]
    assert lines[1].endswith("-")
    page = write_dashboard([run], run.name, tmp_path / "d.html").read_text()
    rows = re.findall(r'<tr class="(?:completed|quarantined)"[^>]*>(.*?)</tr>', page)
    assert [n + 1 for n, row in enumerate(rows) if f'<td class="reason">{name}</td>' in row] == [
        4,
        5,
        6,
    ]
    assert 'id="chart-equity"' in page
