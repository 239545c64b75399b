"""The dashboard's plotly figures, one builder per chart, from a :class:`RunHistory`.

Every timeline chart shares the batch axis, the scenario lane and the shading of scenario and
quarantined batches, so the charts line up when read one under the other. Text from the store
reaches plotly labels escaped (plotly renders a subset of HTML tags). The data views behind
the charts live in :mod:`healthpredict.reporting.timeline_views`; the page around them in
:mod:`healthpredict.reporting.dashboard`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from healthpredict.monitoring.history import RunHistory
from healthpredict.reporting.timeline_views import (
    EVENT_STYLE,
    QUARANTINE_SHADE,
    SCENARIO_SHADE,
    SEVERITY_CAP,
    SEVERITY_SCALE,
    VERDICT_COLOURS,
    VERSION_COLOURS,
    active_spans,
    auc_range,
    drift_matrix,
    escape,
    first_onset,
    policy_colour,
    scenario_lanes,
    summarise_run,
    timeline_events,
    version_label,
)

FONT = {"family": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", "size": 13}


def auc_figure(run: RunHistory) -> go.Figure:
    """Scenario and event lanes on top; below, realised AUC with its interval, estimate and
    reference."""
    batches = run.batches
    figure, rows = _timeline_subplots(batches, events=40, main=330)
    for trace in _auc_traces(batches):
        figure.add_trace(trace, row=rows["main"], col=1)
    if math.isfinite(run.reference_auc):
        figure.add_trace(_reference_trace(run), row=rows["main"], col=1)
    _add_pending(figure, batches, rows["main"])
    _add_events(figure, batches, rows["events"])
    _mark_batches(figure, batches)
    values = [batches[name] for name in ("realised_auc_low", "realised_auc_high", "estimated_auc")]
    limits = auc_range([*values, run.reference_auc])
    figure.update_yaxes(title_text="ROC-AUC", range=limits, row=rows["main"], col=1)
    return _finish(figure, batches, height=470 + _lane_height(batches), bottom_row=rows["main"])


def _timeline_subplots(batches: pd.DataFrame, **rows_px: int) -> tuple[go.Figure, dict[str, int]]:
    """Rows sharing the batch axis: the scenario lane (when there are scenarios), then
    ``rows_px`` (name: height in pixels) in order; returns the figure and each row's number."""
    heights = {"scenarios": _lane_height(batches)} if scenario_lanes(batches) else {}
    heights |= rows_px
    figure = make_subplots(
        rows=len(heights), cols=1, shared_xaxes=True, vertical_spacing=0.025,
        row_heights=list(heights.values()),
    )  # fmt: skip
    rows = {name: number for number, name in enumerate(heights, start=1)}
    if "scenarios" in rows:
        _add_scenario_lane(figure, batches, rows["scenarios"])
    return figure, rows


def _lane_height(batches: pd.DataFrame) -> int:
    return 22 * len(scenario_lanes(batches)) + 8 if scenario_lanes(batches) else 0


def _add_scenario_lane(figure: go.Figure, batches: pd.DataFrame, row: int) -> None:
    """One bar per scenario and stretch of batches it was active in, named on the axis."""
    for name, spans in scenario_lanes(batches).items():
        label = escape(name)
        figure.add_trace(
            go.Bar(
                orientation="h", y=[label] * len(spans), base=[a - 0.5 for a, _ in spans],
                x=[b - a + 1 for a, b in spans], width=0.6, marker_color="#f5a05a",
                showlegend=False, customdata=[f"{a}-{b}" if b > a else str(a) for a, b in spans],
                hovertemplate=f"scenario {label}: batch %{{customdata}}<extra></extra>",
            ),
            row=row, col=1,
        )  # fmt: skip
    figure.update_yaxes(
        autorange="reversed", fixedrange=True, showgrid=False, tickfont={"size": 11},
        row=row, col=1,
    )  # fmt: skip


def _auc_traces(batches: pd.DataFrame) -> list[go.Scatter]:
    x = batches["batch"].astype(int)
    band_x, band_y = _band(x, batches["realised_auc_low"], batches["realised_auc_high"])
    versions = batches["model_version"].map(version_label)
    custom = list(
        zip(batches["realised_auc_low"], batches["realised_auc_high"], versions, strict=True)
    )
    band = go.Scatter(
        x=band_x, y=band_y, fill="toself", mode="lines", hoverinfo="skip",
        line={"width": 1, "color": "rgba(31,119,180,0.3)"},
        fillcolor="#d2e3f3",  # opaque: a see-through blue turns grey on the shading
        name="realised, bootstrap interval",
    )  # fmt: skip
    realised = go.Scatter(
        x=x, y=batches["realised_auc"], customdata=custom, mode="lines+markers",
        name="realised ROC-AUC (labels known)", line={"color": "#1f77b4", "width": 2.5},
        hovertemplate="batch %{x}: realised ROC-AUC %{y:.3f}<br>interval [%{customdata[0]:.3f},"
        " %{customdata[1]:.3f}], model %{customdata[2]}<extra></extra>",
    )  # fmt: skip
    estimated = go.Scatter(
        x=x, y=batches["estimated_auc"], mode="lines+markers",
        name="estimated ROC-AUC (no labels needed)", line={"color": "#9467bd", "dash": "dash"},
        marker={"symbol": "circle-open", "size": 8},
        hovertemplate="batch %{x}: estimated ROC-AUC %{y:.3f}<extra></extra>",
    )  # fmt: skip
    return [band, realised, estimated]


def _reference_trace(run: RunHistory) -> go.Scatter:
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


def _add_pending(figure: go.Figure, batches: pd.DataFrame, row: int) -> None:
    """Say why the realised line stops: those labels have not arrived yet."""
    pending = batches[(batches["status"] == "completed") & batches["realised_auc"].isna()]
    for batch in pending["batch"]:
        figure.add_annotation(
            text="labels<br>pending", x=batch, xref=f"x{_axis(row)}", y=0.02,
            yref=f"y{_axis(row)} domain",
            yanchor="bottom", showarrow=False, font={"size": 11, "color": "#7b8794"},
        )  # fmt: skip


def _add_events(figure: go.Figure, batches: pd.DataFrame, row: int) -> None:
    """Event markers in their own lane, with a dotted line down through the chart."""
    events = timeline_events(batches)
    for kind, (colour, symbol, label) in EVENT_STYLE.items():
        chosen = events[events["kind"] == kind]
        if chosen.empty:
            continue
        marker = {"symbol": symbol, "size": 15, "color": colour, "line": {"width": 0}}
        hover = [escape(text) for text in chosen["text"]]
        lane = go.Scatter(
            x=chosen["batch"], y=[0] * len(chosen), mode="markers", marker=marker, name=label,
            hovertext=hover, hoverinfo="text",
        )  # fmt: skip
        figure.add_trace(lane, row=row, col=1)
        for batch in chosen["batch"]:
            _vertical_line(figure, batch, colour)
    figure.update_yaxes(visible=False, range=[-1, 1], fixedrange=True, row=row, col=1)
    figure.add_annotation(
        text="events", x=0, xref="paper", xanchor="right", y=0, yref=f"y{_axis(row)}",
        showarrow=False, font={"size": 11, "color": "#52606d"},
    )  # fmt: skip


def drift_figure(run: RunHistory) -> go.Figure:
    """Drift share per batch above the feature-by-batch heatmap, sharing the batch axis."""
    batches = run.batches
    severity = drift_matrix(run)
    figure, rows = _timeline_subplots(batches, share=110, features=max(26 * len(severity), 120))
    share, heat = rows["share"], rows["features"]
    figure.add_trace(_drift_share_bars(batches), row=share, col=1)
    peak = float(batches["drift_share"].fillna(0).max()) if len(batches) else 0.0
    figure.update_yaxes(title_text="gain off ref.", tickformat=".0%", row=share)
    figure.update_yaxes(range=[0, max(peak, 0.05) * 1.35], row=share)  # room for bar labels
    if severity.empty:
        # High up, clear of the "quarantined" labels in the middle.
        _note(figure, "no per-feature drift recorded for this run", axes=_axis(heat), y=0.9)
        figure.update_yaxes(visible=False, row=heat)
    else:
        domain = figure.layout[f"yaxis{_axis(heat)}"].domain
        figure.add_trace(_heatmap(run, severity, domain), row=heat, col=1)
        figure.update_yaxes(autorange="reversed", row=heat)  # most often drifted on top
    for batch in batches.loc[batches["status"] == "quarantined", "batch"]:
        figure.add_annotation(
            text="quarantined", textangle=-90, x=batch, xref=f"x{_axis(heat)}", y=0.5,
            yref=f"y{_axis(heat)} domain", showarrow=False,
            font={"size": 12, "color": EVENT_STYLE["quarantined"][0]},
        )  # fmt: skip
    _mark_batches(figure, batches)
    height = 150 + 110 + max(26 * len(severity), 120) + _lane_height(batches)
    return _finish(figure, batches, height=height, bottom_row=heat)


def _drift_share_bars(batches: pd.DataFrame) -> go.Bar:
    """Split gain off the reference per batch, coloured by the two verdicts."""
    verdict = np.where(
        batches["dataset_drift"].eq(True),
        "input drift",
        np.where(batches["data_changed"].eq(True), "data changed", "no move"),
    )
    moved = batches["moved"].replace("", "none")
    return go.Bar(
        x=batches["batch"], y=batches["drift_share"], showlegend=False,
        marker_color=[VERDICT_COLOURS[v] for v in verdict],
        texttemplate="%{y:.0%}", textposition="outside", cliponaxis=False,
        customdata=list(zip(batches["n_drifted"], verdict, moved, strict=True)),
        hovertemplate="batch %{x}: %{customdata[1]}<br>%{y:.0%} of the split gain off the "
        "reference, %{customdata[0]} fields off it<br>moved: %{customdata[2]}<extra></extra>",
    )  # fmt: skip


def _note(figure: go.Figure, text: str, axes: str = "", y: float = 0.5) -> None:
    """A grey message in an empty chart (``axes``: the axis suffix, "" or "2" for x2/y2)."""
    figure.add_annotation(
        text=text, x=0.5, xref=f"x{axes} domain", y=y, yref=f"y{axes} domain",
        showarrow=False, font={"size": 14, "color": "#7b8794"},
    )  # fmt: skip


def _heatmap(run: RunHistory, severity: pd.DataFrame, domain: Sequence[float]) -> go.Heatmap:
    """The heatmap, its colour bar as tall as its own row (``domain``: the row's y extent)."""
    statistic, threshold = drift_matrix(run, "statistic"), drift_matrix(run, "threshold")
    return go.Heatmap(
        z=severity.to_numpy(),
        x=list(severity.columns),
        y=[escape(feature) for feature in severity.index],
        customdata=np.dstack([statistic.to_numpy(), threshold.to_numpy()]),
        zmin=0,
        zmax=SEVERITY_CAP,
        colorscale=SEVERITY_SCALE,
        xgap=2,
        ygap=2,
        hoverongaps=False,
        hovertemplate="%{y}, batch %{x}<br>statistic %{customdata[0]:.3g}, threshold "
        "%{customdata[1]:.3g}<br>severity %{z:.2f} (1 = threshold)<extra></extra>",
        colorbar={
            "title": {"text": "severity", "side": "right"},
            "tickvals": [0, 1, 2, 3],
            "ticktext": ["0", "1 threshold", "2", "≥ 3"],
            "len": domain[1] - domain[0],
            "y": domain[0],
            "yanchor": "bottom",
            "thickness": 14,
        },
    )


def prediction_figure(run: RunHistory) -> go.Figure:
    """One box per batch from the stored quantiles, one colour per scoring model version."""
    versions = run.batches.set_index("batch")["model_version"].map(version_label)
    quantiles = run.prediction_quantiles.assign(
        version=lambda frame: frame["batch"].map(versions).fillna("-")
    )
    figure = make_subplots(rows=1, cols=1)
    for position, (version, group) in enumerate(quantiles.groupby("version", sort=False)):
        box = go.Box(
            x=group["batch"], q1=group["q25"], median=group["q50"], q3=group["q75"],
            lowerfence=group["q05"], upperfence=group["q95"], mean=group["mean"], boxmean=True,
            width=0.6,
            name=f"scored by model {escape(version)}",
            marker_color=VERSION_COLOURS[position % len(VERSION_COLOURS)],
        )  # fmt: skip
        figure.add_trace(box)
    if quantiles.empty:
        _note(figure, "no predictions recorded for this run")
        figure.update_yaxes(range=[0, 0.5])
    _mark_batches(figure, run.batches)
    figure.update_layout(boxmode="overlay")
    figure.update_yaxes(title_text="predicted 30-day readmission risk", tickformat=".0%")
    return _finish(figure, run.batches, height=420, bottom_row=1)


def policies_figure(runs: list[RunHistory], main: RunHistory) -> go.Figure:
    """Realised AUC of every run over the batches; mean AUC against retrains beside it."""
    figure = make_subplots(
        rows=1, cols=2, column_widths=[0.64, 0.36], horizontal_spacing=0.1,
        subplot_titles=("realised ROC-AUC per batch", "model quality against retrains"),
    )  # fmt: skip
    onset = first_onset(main.batches)
    most = max(run.retrains for run in runs)
    for position, run in enumerate(runs):
        # Labels grow away from the right edge, so none is cut off.
        side = "top left" if run.retrains == most > 0 else "top right"
        _add_policy_traces(figure, run, policy_colour(run, position), onset, side)
    _mark_batches(figure, main.batches, yref="y domain")
    if math.isfinite(main.reference_auc):
        figure.add_trace(_reference_trace(main), row=1, col=1)
    after = f"from batch {onset} (first scenario)" if onset is not None else "all batches"
    figure.update_xaxes(title_text="production batch", dtick=1, row=1, col=1)
    figure.update_xaxes(title_text="retrains asked for", dtick=1, rangemode="tozero", row=1, col=2)
    realised = [run.batches["realised_auc"] for run in runs]
    limits = auc_range([*realised, main.reference_auc])
    figure.update_yaxes(title_text="ROC-AUC", range=limits, row=1, col=1)
    figure.update_yaxes(title_text=f"mean realised ROC-AUC,<br>{after}", row=1, col=2)
    figure.update_xaxes(range=[-0.6, most + 0.6], row=1, col=2)
    points = [summarise_run(run) for run in runs]
    means = [p.mean_auc_after_onset if onset is not None else p.mean_auc for p in points]
    figure.update_yaxes(range=auc_range(means), row=1, col=2)
    return _style(figure, height=460)


def _add_policy_traces(
    figure: go.Figure, run: RunHistory, colour: str, onset: int | None, text_side: str
) -> None:
    """The run's realised AUC line with its retrains marked, and its point on the right."""
    batches, label = run.batches, escape(f"{run.name} ({run.policy})")
    line = go.Scatter(
        x=batches["batch"], y=batches["realised_auc"], mode="lines+markers", name=label,
        legendgroup=label, line={"color": colour, "width": 2},
        hovertemplate=f"{label}<br>batch %{{x}}: %{{y:.3f}}<extra></extra>",
    )  # fmt: skip
    events = timeline_events(batches)
    retrains = events[events["kind"] != "quarantined"].merge(batches, on="batch")
    symbols = [EVENT_STYLE[kind][1] for kind in retrains["kind"]]
    outline = {"width": 1, "color": "white"}
    markers = go.Scatter(
        x=retrains["batch"], y=retrains["realised_auc"].fillna(retrains["estimated_auc"]),
        mode="markers", legendgroup=label, showlegend=False, hoverinfo="text",
        hovertext=[escape(text) for text in retrains["text"]],
        marker={"symbol": symbols, "size": 13, "color": colour, "line": outline},
    )  # fmt: skip
    summary = summarise_run(run)
    quality = summary.mean_auc_after_onset if onset is not None else summary.mean_auc
    point = go.Scatter(
        x=[summary.retrains], y=[quality], mode="markers+text", text=[label],
        textposition=text_side, legendgroup=label, showlegend=False, cliponaxis=False,
        marker={"size": 16, "color": colour},
        hovertemplate=f"{label}<br>%{{x}} retrains, {summary.promotions} promotions"
        "<br>mean realised ROC-AUC %{y:.3f}<extra></extra>",
    )  # fmt: skip
    figure.add_trace(line, row=1, col=1)
    figure.add_trace(markers, row=1, col=1)
    figure.add_trace(point, row=1, col=2)


def _band(x: pd.Series, low: pd.Series, high: pd.Series) -> tuple[list[object], list[object]]:
    """Closed outline of the interval for each run of batches with labels, None between runs.

    A plotly "toself" fill closes each segment on its own, so gaps stay gaps.
    """
    xs: list[object] = []
    ys: list[object] = []
    known = (low.notna() & high.notna()).to_numpy()
    segment_id = np.cumsum(~known)
    for _, index in pd.Series(range(len(x)))[known].groupby(segment_id[known]):
        seg_x = x.iloc[index].tolist()
        xs += [*seg_x, *seg_x[::-1], None]
        ys += [*high.iloc[index].tolist(), *low.iloc[index].tolist()[::-1], None]
    return xs, ys


def _mark_batches(figure: go.Figure, batches: pd.DataFrame, *, yref: str = "paper") -> None:
    """Shade batches with injected scenarios and quarantined ones (across ``yref``'s height)."""
    for first, last in active_spans(batches):
        _shade(figure, first - 0.5, last + 0.5, SCENARIO_SHADE, yref)
    for batch in batches.loc[batches["status"] == "quarantined", "batch"]:
        _shade(figure, batch - 0.5, batch + 0.5, QUARANTINE_SHADE, yref)


def _shade(figure: go.Figure, x0: float, x1: float, colour: str, yref: str) -> None:
    figure.add_shape(
        type="rect", xref="x", yref=yref, x0=x0, x1=x1, y0=0, y1=1, fillcolor=colour,
        line_width=0, layer="below",
    )  # fmt: skip


def _vertical_line(figure: go.Figure, x: float, colour: str) -> None:
    figure.add_shape(
        type="line", xref="x", yref="paper", x0=x, x1=x, y0=0, y1=1, opacity=0.8,
        line={"color": colour, "width": 1.5, "dash": "dot"},
    )  # fmt: skip


def _axis(row: int) -> str:
    """Plotly's axis suffix of a one-column subplot row: "" for row 1, "2" for row 2."""
    return "" if row == 1 else str(row)


def _finish(figure: go.Figure, batches: pd.DataFrame, height: int, bottom_row: int) -> go.Figure:
    numbers = batches["batch"].astype(int)
    ticks = {"tickmode": "array", "tickvals": numbers.tolist()} if len(numbers) <= 40 else {}
    figure.update_xaxes(range=[numbers.min() - 0.5, numbers.max() + 0.5], showgrid=False, **ticks)
    figure.update_xaxes(title_text="production batch", row=bottom_row, col=1)
    return _style(figure, height=height)


def _style(figure: go.Figure, height: int) -> go.Figure:
    figure.update_layout(
        template="plotly_white",
        height=height,
        font=FONT,
        margin={"l": 80, "r": 30, "t": 40, "b": 50},
        legend={"orientation": "h", "x": 0, "y": -0.14, "yanchor": "top"},
        hoverlabel={"align": "left"},
    )
    return figure
