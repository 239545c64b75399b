"""Plotly pieces every timeline chart of :mod:`healthpredict.reporting.charts` is built from.

The charts share the batch axis, the scenario lane, the event lane and the shading of
scenario and quarantined batches, so they line up when read one under the other; drawing
those pieces here, once, keeps them identical on every chart (and on the PNGs, which are
exports of the same figures). Text from the store reaches plotly labels escaped.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from healthpredict.monitoring.history import RunHistory
from healthpredict.reporting.timeline_views import (
    EVENT_STYLE,
    QUARANTINE_SHADE,
    SCENARIO_SHADE,
    active_spans,
    escape,
    scenario_lanes,
    timeline_events,
)

FONT = {"family": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", "size": 13}
SCENARIO_COLOUR = "#f5a05a"
NOTE_COLOUR = "#7b8794"


def timeline_subplots(batches: pd.DataFrame, **rows_px: int) -> tuple[go.Figure, dict[str, int]]:
    """Rows sharing the batch axis: the scenario lane (when there are scenarios), then
    ``rows_px`` (name: height in pixels) in order; returns the figure and each row's number."""
    heights = {"scenarios": lane_height(batches)} if scenario_lanes(batches) else {}
    heights |= rows_px
    figure = make_subplots(
        rows=len(heights),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.025,
        row_heights=list(heights.values()),
    )
    rows = {name: number for number, name in enumerate(heights, start=1)}
    if "scenarios" in rows:
        _add_scenario_lane(figure, batches, rows["scenarios"])
    return figure, rows


def lane_height(batches: pd.DataFrame) -> int:
    """Pixels of the scenario lane: one bar per scenario, none without scenarios."""
    lanes = scenario_lanes(batches)
    return 22 * len(lanes) + 8 if lanes else 0


def _add_scenario_lane(figure: go.Figure, batches: pd.DataFrame, row: int) -> None:
    """One bar per scenario and stretch of batches it was active in, named on the axis."""
    for name, spans in scenario_lanes(batches).items():
        label = escape(name)
        bar = go.Bar(
            orientation="h",
            y=[label] * len(spans),
            base=[first - 0.5 for first, _ in spans],
            x=[last - first + 1 for first, last in spans],
            width=0.6,
            marker_color=SCENARIO_COLOUR,
            showlegend=False,
            customdata=[f"{a}-{b}" if b > a else str(a) for a, b in spans],
            hovertemplate=f"scenario {label}: batch %{{customdata}}<extra></extra>",
        )
        figure.add_trace(bar, row=row, col=1)
    lane_axis = {"fixedrange": True, "showgrid": False, "tickfont": {"size": 11}}
    figure.update_yaxes(autorange="reversed", row=row, col=1, **lane_axis)


def reference_trace(run: RunHistory) -> go.Scatter:
    """The initial champion's AUC on its own test window, as a legend entry (not a label
    that would sit on top of the data)."""
    batches = run.batches["batch"].astype(int)
    label = f"initial champion on its test window ({run.reference_auc:.3f})"
    return go.Scatter(
        x=[batches.min() - 0.5, batches.max() + 0.5],
        y=[run.reference_auc] * 2,
        mode="lines",
        line={"color": "#52606d", "dash": "dot", "width": 1.2},
        name=label,
        hovertemplate=f"{label}<extra></extra>",
    )


def add_event_lane(figure: go.Figure, batches: pd.DataFrame, row: int) -> None:
    """Event markers (:data:`EVENT_STYLE`) in their own lane, a dotted line down the chart."""
    events = timeline_events(batches)
    for kind, (colour, symbol, label) in EVENT_STYLE.items():
        chosen = events[events["kind"] == kind]
        if chosen.empty:
            continue
        lane = go.Scatter(
            x=chosen["batch"],
            y=[0] * len(chosen),
            mode="markers",
            marker={"symbol": symbol, "size": 15, "color": colour, "line": {"width": 0}},
            name=label,
            hovertext=[escape(text) for text in chosen["text"]],
            hoverinfo="text",
        )
        figure.add_trace(lane, row=row, col=1)
        for batch in chosen["batch"]:
            _vertical_line(figure, batch, colour)
    figure.update_yaxes(visible=False, range=[-1, 1], fixedrange=True, row=row, col=1)
    label_font = {"size": 11, "color": "#52606d"}
    figure.add_annotation(
        text="events",
        x=0,
        xref="paper",
        xanchor="right",
        y=0,
        yref=f"y{axis_suffix(row)}",
        showarrow=False,
        font=label_font,
    )


def mark_batches(figure: go.Figure, batches: pd.DataFrame, *, yref: str = "paper") -> None:
    """Shade batches with injected scenarios and quarantined ones (across ``yref``'s height)."""
    for first, last in active_spans(batches):
        _shade(figure, first - 0.5, last + 0.5, SCENARIO_SHADE, yref)
    for batch in batches.loc[batches["status"] == "quarantined", "batch"]:
        _shade(figure, batch - 0.5, batch + 0.5, QUARANTINE_SHADE, yref)


def _shade(figure: go.Figure, x0: float, x1: float, colour: str, yref: str) -> None:
    figure.add_shape(
        type="rect",
        xref="x",
        yref=yref,
        x0=x0,
        x1=x1,
        y0=0,
        y1=1,
        fillcolor=colour,
        line_width=0,
        layer="below",
    )


def _vertical_line(figure: go.Figure, x: float, colour: str) -> None:
    line = {"color": colour, "width": 1.5, "dash": "dot"}
    figure.add_shape(
        type="line", xref="x", yref="paper", x0=x, x1=x, y0=0, y1=1, opacity=0.8, line=line
    )


def note(figure: go.Figure, text: str, axes: str = "", y: float = 0.5) -> None:
    """A grey message in an empty chart (``axes``: the axis suffix, "" or "2" for x2/y2)."""
    figure.add_annotation(
        text=text,
        x=0.5,
        xref=f"x{axes} domain",
        y=y,
        yref=f"y{axes} domain",
        showarrow=False,
        font={"size": 14, "color": NOTE_COLOUR},
    )


def label_batch(
    figure: go.Figure, batch: int, row: int, text: str, y: float, **options: object
) -> None:
    """Text over one batch of ``row`` at height ``y`` (0 bottom, 1 top of the row);
    ``options`` are plotly annotation attributes (font, angle, anchor)."""
    suffix = axis_suffix(row)
    figure.add_annotation(
        text=text,
        x=batch,
        xref=f"x{suffix}",
        y=y,
        yref=f"y{suffix} domain",
        showarrow=False,
        **options,
    )


def axis_suffix(row: int) -> str:
    """Plotly's axis suffix of a one-column subplot row: "" for row 1, "2" for row 2."""
    return "" if row == 1 else str(row)


def finish(figure: go.Figure, batches: pd.DataFrame, height: int, bottom_row: int) -> go.Figure:
    """Batch ticks and range on every row, the axis title under ``bottom_row``, the style."""
    numbers = batches["batch"].astype(int)
    ticks = {"tickmode": "array", "tickvals": numbers.tolist()} if len(numbers) <= 40 else {}
    figure.update_xaxes(range=[numbers.min() - 0.5, numbers.max() + 0.5], showgrid=False, **ticks)
    figure.update_xaxes(title_text="production batch", row=bottom_row, col=1)
    return style(figure, height=height)


def style(figure: go.Figure, height: int) -> go.Figure:
    """The look every chart shares: template, font, margins, the legend under the chart."""
    figure.update_layout(
        template="plotly_white",
        height=height,
        font=FONT,
        margin={"l": 80, "r": 30, "t": 40, "b": 50},
        legend={"orientation": "h", "x": 0, "y": -0.14, "yanchor": "top"},
        hoverlabel={"align": "left"},
    )
    return figure
