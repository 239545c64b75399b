"""The per-group chart: realised ROC-AUC and calibration gap of each patient group over time.

Per group attribute (age band, gender, race by default), a header naming it and its groups
too few to tell (not drawn), then two rows sharing the batch axis: each group's realised
ROC-AUC, then its calibration gap (observed minus mean predicted readmission rate), each point
with its patient-grouped bootstrap interval and the whole population as a dashed grey line to
read the groups against. A red ring marks a window where the equity monitor alarmed on that
group for that figure (hover: the alarm). The figures come from ``RunHistory.groups`` (the
``window_groups`` rows of the version that served each window). Listed in
:data:`healthpredict.reporting.charts.CHARTS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from healthpredict.monitoring.equity import ALARM, AUC_FIGURE, CALIBRATION_FIGURE, TOO_FEW
from healthpredict.monitoring.history import RunHistory
from healthpredict.reporting.figure_parts import (
    NOTE_COLOUR,
    axis_suffix,
    finish,
    lane_height,
    mark_batches,
    note,
    timeline_subplots,
)
from healthpredict.reporting.timeline_views import VERSION_COLOURS, escape

ALARM_COLOUR = "#d62728"
POPULATION_STYLE = {"color": "#52606d", "dash": "dash", "width": 1.5}
# Points of one window side by side rather than on top of each other (in batch units).
_SPREAD = 0.07


@dataclass(frozen=True)
class _Measure:
    column: str  # prefix of the value and interval columns of the group history
    title: str  # y axis title
    label: str  # in hover texts; how the equity monitor's alarm texts name the figure
    number: str  # plotly number format
    pixels: int  # row height


_MEASURES = (
    _Measure("auc", "ROC-AUC", AUC_FIGURE, ".3f", 210),
    _Measure("calibration_gap", "observed −<br>predicted", CALIBRATION_FIGURE, "+.3f", 150),
)
_HEADER_PIXELS = 28


def equity_figure(run: RunHistory, _: Sequence[RunHistory] = ()) -> go.Figure:
    """Per attribute, a header, then each group's realised AUC and calibration gap."""
    groups = run.groups
    attributes = [a for a in dict.fromkeys(groups["attribute"]) if a != "all"]
    if not attributes:
        return _empty(run)
    rows_px: dict[str, int] = {}
    for attribute in attributes:
        rows_px[f"header:{attribute}"] = _HEADER_PIXELS
        rows_px |= {f"{m.column}:{attribute}": m.pixels for m in _MEASURES}
    figure, rows = timeline_subplots(run.batches, **rows_px)
    population = groups[groups["attribute"] == "all"]
    for attribute in attributes:
        members = groups[groups["attribute"] == attribute]
        _header(figure, attribute, members, rows[f"header:{attribute}"])
        for measure in _MEASURES:
            row = rows[f"{measure.column}:{attribute}"]
            legend = attribute == attributes[0] and measure is _MEASURES[0]
            figure.add_trace(_population_trace(population, measure, legend), row=row, col=1)
            for trace in _group_traces(members, attribute, measure):
                figure.add_trace(trace, row=row, col=1)
            figure.update_yaxes(title_text=measure.title, row=row, col=1)
    if groups["status"].eq(ALARM).any():
        figure.add_trace(_alarm_legend(), row=rows[f"auc:{attributes[0]}"], col=1)
    mark_batches(figure, run.batches)
    height = 150 + sum(rows_px.values()) + lane_height(run.batches)
    return finish(figure, run.batches, height=height, bottom_row=len(rows))


def _empty(run: RunHistory) -> go.Figure:
    figure = make_subplots(rows=1, cols=1)
    note(
        figure,
        "no group figures recorded for this run yet: they come once a window's outcomes arrive",
    )
    figure.update_yaxes(visible=False)
    mark_batches(figure, run.batches)
    return finish(figure, run.batches, height=220, bottom_row=1)


def _population_trace(population: pd.DataFrame, measure: _Measure, legend: bool) -> go.Scatter:
    return go.Scatter(
        x=population["window"],
        y=population[measure.column],
        mode="lines",
        line=POPULATION_STYLE,
        name="all patients",
        legendgroup="all patients",
        showlegend=legend,
        hovertemplate=f"all patients, batch %{{x}}: {measure.label} "
        f"%{{y:{measure.number}}}<extra></extra>",
    )


def _group_traces(members: pd.DataFrame, attribute: str, measure: _Measure) -> list[go.Scatter]:
    """One line with interval bars per measured group, then a ring on each window where the
    group alarmed on this measure."""
    measured = members[members["status"] != TOO_FEW]
    names = list(dict.fromkeys(measured["group"]))
    column, number = measure.column, measure.number
    traces = []
    for position, name in enumerate(names):
        rows = measured[measured["group"] == name].sort_values("window")
        offset = (position - (len(names) - 1) / 2) * _SPREAD
        title = escape(f"{attribute} {name}")
        traces.append(
            go.Scatter(
                x=rows["window"] + offset,
                y=rows[column],
                error_y={
                    "type": "data",
                    "array": rows[f"{column}_high"] - rows[column],
                    "arrayminus": rows[column] - rows[f"{column}_low"],
                    "thickness": 1.2,
                    "width": 3,
                },
                customdata=list(
                    zip(rows[f"{column}_low"], rows[f"{column}_high"], rows["n"], strict=True)
                ),
                mode="lines+markers",
                name=title,
                legendgroup=title,
                showlegend=measure is _MEASURES[0],
                line={"color": VERSION_COLOURS[position % len(VERSION_COLOURS)], "width": 1.8},
                hovertemplate=f"{title}, batch %{{x:.0f}}: {measure.label} %{{y:{number}}}"
                f"<br>interval [%{{customdata[0]:{number}}}, %{{customdata[1]:{number}}}], "
                "%{customdata[2]} encounters<extra></extra>",
            )
        )
        alarms = rows["alarms"].map(lambda texts: _about(texts, measure))
        if alarms.map(bool).any():
            traces.append(_alarm_trace(rows[alarms.map(bool)], alarms, offset, measure, title))
    return traces


def _about(alarms: Sequence[str], measure: _Measure) -> list[str]:
    """The group's alarms about ``measure`` ("equity: age [70-80): ROC-AUC ...")."""
    return [alarm for alarm in alarms if f": {measure.label} " in alarm]


def _alarm_trace(
    alarmed: pd.DataFrame, alarms: pd.Series, offset: float, measure: _Measure, title: str
) -> go.Scatter:
    reasons = ["<br>".join(escape(a) for a in alarms[index]) for index in alarmed.index]
    return go.Scatter(
        x=alarmed["window"] + offset,
        y=alarmed[measure.column],
        mode="markers",
        name="equity alarm",
        legendgroup=title,
        showlegend=False,
        marker={"symbol": "circle-open", "size": 17, "color": ALARM_COLOUR, "line": {"width": 2.5}},
        hovertext=reasons,
        hoverinfo="text",
    )


def _alarm_legend() -> go.Scatter:
    """The ring's legend entry (the rings themselves toggle with their group)."""
    return go.Scatter(
        x=[None],
        y=[None],
        mode="markers",
        name="equity alarm on the group",
        marker={"symbol": "circle-open", "size": 14, "color": ALARM_COLOUR, "line": {"width": 2.5}},
    )


def _header(figure: go.Figure, attribute: str, members: pd.DataFrame, row: int) -> None:
    """The attribute's name over its rows, and which of its groups are too few to tell."""
    too_few = members.loc[members["status"] == TOO_FEW, "group"]
    text = f"<b>{escape(attribute)}</b>"
    if not too_few.empty:
        names = ", ".join(escape(name) for name in dict.fromkeys(too_few))
        text += f"   too few to tell (not drawn) in some windows: {names}"
    # In paper coordinates: plotly drops an annotation placed on a hidden axis.
    bottom = figure.layout[f"yaxis{axis_suffix(row)}"].domain[0]
    figure.add_annotation(
        text=text,
        x=0,
        xref="paper",
        xanchor="left",
        y=bottom,
        yref="paper",
        yanchor="bottom",
        showarrow=False,
        font={"size": 13, "color": NOTE_COLOUR},
    )
    figure.update_yaxes(visible=False, fixedrange=True, row=row, col=1)
