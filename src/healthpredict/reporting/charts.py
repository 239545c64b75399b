"""Every chart of the report, drawn once with plotly from :class:`RunHistory` objects.

The dashboard (:mod:`healthpredict.reporting.dashboard`) embeds these figures and the PNG
report (:mod:`healthpredict.reporting.timeline_plots`) exports the same figures, so the page
and the files cannot disagree. :data:`CHARTS` lists them in page order with their heading,
what to read in them and their PNG name. To add a chart, write a builder
``(main run, all runs) -> go.Figure`` from the pieces in
:mod:`healthpredict.reporting.figure_parts` (in a module of its own when it is large, as
:mod:`~healthpredict.reporting.equity_chart`) and add one :class:`Chart` to :data:`CHARTS`:
the page gets a section and the report a PNG. The data views behind the charts live in
:mod:`healthpredict.reporting.timeline_views`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from healthpredict.monitoring.history import RunHistory
from healthpredict.reporting.equity_chart import equity_figure
from healthpredict.reporting.figure_parts import (
    NOTE_COLOUR,
    add_event_lane,
    axis_suffix,
    finish,
    label_batch,
    lane_height,
    mark_batches,
    note,
    reference_trace,
    timeline_subplots,
)
from healthpredict.reporting.policy_chart import policies_figure
from healthpredict.reporting.timeline_views import (
    EVENT_STYLE,
    SEVERITY_CAP,
    SEVERITY_SCALE,
    VERDICT_COLOURS,
    VERSION_COLOURS,
    auc_range,
    drift_matrix,
    escape,
    version_label,
)

ChartBuilder = Callable[[RunHistory, Sequence[RunHistory]], go.Figure]


@dataclass(frozen=True)
class Chart:
    """One chart of the report.

    Attributes:
        id: Element id of the chart on the dashboard page.
        png: File name of the PNG, without the suffix.
        heading: Section heading on the page, the title of the PNG.
        note: What to read in the chart, under the heading.
        draw: Builds the figure from the main run and every run compared with it (the main
            run among them); the timeline charts show the main run alone.
    """

    id: str
    png: str
    heading: str
    note: str
    draw: ChartBuilder


def auc_figure(run: RunHistory, _: Sequence[RunHistory] = ()) -> go.Figure:
    """Scenario and event lanes on top; below, realised AUC with its interval, estimate and
    reference."""
    batches = run.batches
    figure, rows = timeline_subplots(batches, events=40, main=330)
    for trace in _auc_traces(batches):
        figure.add_trace(trace, row=rows["main"], col=1)
    if math.isfinite(run.reference_auc):
        figure.add_trace(reference_trace(run), row=rows["main"], col=1)
    # Say why the realised line stops: those labels have not arrived yet.
    pending = batches[(batches["status"] == "completed") & batches["realised_auc"].isna()]
    font = {"size": 11, "color": NOTE_COLOUR}
    for batch in pending["batch"]:
        label_batch(
            figure, batch, rows["main"], "labels<br>pending", 0.02, yanchor="bottom", font=font
        )
    add_event_lane(figure, batches, rows["events"])
    mark_batches(figure, batches)
    values = [batches[name] for name in ("realised_auc_low", "realised_auc_high", "estimated_auc")]
    limits = auc_range([*values, run.reference_auc])
    figure.update_yaxes(title_text="ROC-AUC", range=limits, row=rows["main"], col=1)
    return finish(figure, batches, height=470 + lane_height(batches), bottom_row=rows["main"])


def _auc_traces(batches: pd.DataFrame) -> list[go.Scatter]:
    x = batches["batch"].astype(int)
    band_x, band_y = _band(x, batches["realised_auc_low"], batches["realised_auc_high"])
    versions = batches["model_version"].map(version_label)
    custom = list(
        zip(batches["realised_auc_low"], batches["realised_auc_high"], versions, strict=True)
    )
    band = go.Scatter(
        x=band_x,
        y=band_y,
        fill="toself",
        mode="lines",
        hoverinfo="skip",
        line={"width": 1, "color": "rgba(31,119,180,0.3)"},
        fillcolor="#d2e3f3",  # opaque: a see-through blue turns grey on the shading
        name="realised, bootstrap interval",
    )
    realised = go.Scatter(
        x=x,
        y=batches["realised_auc"],
        customdata=custom,
        mode="lines+markers",
        name="realised ROC-AUC (labels known)",
        line={"color": "#1f77b4", "width": 2.5},
        hovertemplate="batch %{x}: realised ROC-AUC %{y:.3f}<br>interval [%{customdata[0]:.3f},"
        " %{customdata[1]:.3f}], model %{customdata[2]}<extra></extra>",
    )
    estimated = go.Scatter(
        x=x,
        y=batches["estimated_auc"],
        mode="lines+markers",
        name="estimated ROC-AUC (no labels needed)",
        line={"color": "#9467bd", "dash": "dash"},
        marker={"symbol": "circle-open", "size": 8},
        hovertemplate="batch %{x}: estimated ROC-AUC %{y:.3f}<extra></extra>",
    )
    return [band, realised, estimated]


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


def drift_figure(run: RunHistory, _: Sequence[RunHistory] = ()) -> go.Figure:
    """Drift share per batch above the feature-by-batch heatmap, sharing the batch axis."""
    batches = run.batches
    severity = drift_matrix(run)
    figure, rows = timeline_subplots(batches, share=110, features=max(26 * len(severity), 120))
    share, heat = rows["share"], rows["features"]
    figure.add_trace(_drift_share_bars(batches), row=share, col=1)
    peak = float(batches["drift_share"].fillna(0).max()) if len(batches) else 0.0
    figure.update_yaxes(title_text="gain off ref.", tickformat=".0%", row=share)
    figure.update_yaxes(range=[0, max(peak, 0.05) * 1.35], row=share)  # room for bar labels
    if severity.empty:
        # High up, clear of the "quarantined" labels in the middle.
        note(figure, "no per-feature drift recorded for this run", axes=axis_suffix(heat), y=0.9)
        figure.update_yaxes(visible=False, row=heat)
    else:
        domain = figure.layout[f"yaxis{axis_suffix(heat)}"].domain
        figure.add_trace(_heatmap(run, severity, domain), row=heat, col=1)
        figure.update_yaxes(autorange="reversed", row=heat)  # most often drifted on top
    font = {"size": 12, "color": EVENT_STYLE["quarantined"][0]}
    for batch in batches.loc[batches["status"] == "quarantined", "batch"]:
        label_batch(figure, batch, heat, "quarantined", 0.5, textangle=-90, font=font)
    mark_batches(figure, batches)
    height = 150 + 110 + max(26 * len(severity), 120) + lane_height(batches)
    return finish(figure, batches, height=height, bottom_row=heat)


def _drift_share_bars(batches: pd.DataFrame) -> go.Bar:
    """Split gain off the reference per batch, coloured by the two verdicts."""
    verdict = np.where(
        batches["dataset_drift"].eq(True),
        "input drift",
        np.where(batches["data_changed"].eq(True), "data changed", "no move"),
    )
    moved = batches["moved"].replace("", "none")
    return go.Bar(
        x=batches["batch"],
        y=batches["drift_share"],
        showlegend=False,
        marker_color=[VERDICT_COLOURS[v] for v in verdict],
        texttemplate="%{y:.0%}",
        textposition="outside",
        cliponaxis=False,
        customdata=list(zip(batches["n_drifted"], verdict, moved, strict=True)),
        hovertemplate="batch %{x}: %{customdata[1]}<br>%{y:.0%} of the split gain off the "
        "reference, %{customdata[0]} fields off it<br>moved: %{customdata[2]}<extra></extra>",
    )


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


def prediction_figure(run: RunHistory, _: Sequence[RunHistory] = ()) -> go.Figure:
    """One box per batch from the stored quantiles, one colour per scoring model version."""
    versions = run.batches.set_index("batch")["model_version"].map(version_label)
    quantiles = run.prediction_quantiles.assign(
        version=lambda frame: frame["batch"].map(versions).fillna("-")
    )
    figure = make_subplots(rows=1, cols=1)
    for position, (version, group) in enumerate(quantiles.groupby("version", sort=False)):
        box = go.Box(
            x=group["batch"],
            q1=group["q25"],
            median=group["q50"],
            q3=group["q75"],
            lowerfence=group["q05"],
            upperfence=group["q95"],
            mean=group["mean"],
            boxmean=True,
            width=0.6,
            name=f"scored by model {escape(version)}",
            marker_color=VERSION_COLOURS[position % len(VERSION_COLOURS)],
        )
        figure.add_trace(box)
    if quantiles.empty:
        note(figure, "no predictions recorded for this run")
        figure.update_yaxes(range=[0, 0.5])
    mark_batches(figure, run.batches)
    figure.update_layout(boxmode="overlay")
    figure.update_yaxes(title_text="predicted 30-day readmission risk", tickformat=".0%")
    return finish(figure, run.batches, height=420, bottom_row=1)


AUC_NOTE = (
    "Realised ROC-AUC once a batch's labels arrive, with its bootstrap interval; the label-free "
    "estimate is there from the moment a batch is scored. Markers above the chart: retrains, "
    "promotions and quarantined batches (hover for details). Shaded: injected scenarios."
)
DRIFT_NOTE = (
    "Every contract field is compared with the serving model's reference, each check at a "
    "threshold calibrated so that a batch from the reference's population alarms at most 5 % "
    "of the time. Top: the share of the model's split gain in fields off the reference; "
    "orange: data changed (a field moved in this batch), red: input drift (enough of the "
    "model's inputs moved to matter), blue: nothing moved (fields still off the reference "
    "have settled in a new state). Bottom: each field's statistic against its threshold; "
    "orange to red cells are off the reference (hover for the statistic)."
)
PREDICTION_NOTE = (
    "Distribution of the predicted 30-day readmission risk: box 25-75 %, whiskers 5-95 %, "
    "solid line median, dashed line mean; colour: the model version that scored the batch."
)
EQUITY_NOTE = (
    "How the model serves each patient group once a window's outcomes arrive: per group, the "
    "realised ROC-AUC and the calibration gap (observed minus predicted readmission rate) with "
    "their patient-grouped bootstrap intervals; dashed grey: all patients. A red ring: an "
    "equity alarm, the group's whole interval beyond the margin from all patients. Small "
    "groups are pooled; groups still too few to tell are named, not drawn."
)
POLICY_NOTE = (
    "The same batches replayed under each policy: realised ROC-AUC per batch (triangles: "
    "retrain refused or failed, stars: challenger promoted) and model quality against the "
    "number of retrains."
)
# Page order. Adding a chart: a builder with the same signature and one line here.
CHARTS = (
    Chart("chart-auc", "auc_timeline", "Model quality over time", AUC_NOTE, auc_figure),
    Chart("chart-drift-heatmap", "drift_heatmap", "Data drift per batch", DRIFT_NOTE, drift_figure),
    Chart(
        "chart-predictions",
        "prediction_distribution",
        "Predicted risk per batch",
        PREDICTION_NOTE,
        prediction_figure,
    ),
    Chart(
        "chart-equity",
        "equity_timeline",
        "Model quality by patient group",
        EQUITY_NOTE,
        equity_figure,
    ),
    Chart(
        "chart-policies",
        "policy_comparison",
        "Retraining policies compared",
        POLICY_NOTE,
        policies_figure,
    ),
)
