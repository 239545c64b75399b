"""The policy comparison chart: the same batches replayed under each retraining policy.

Left, every run's realised AUC over the batches with its retrains marked; right, each run's
mean realised AUC against the number of retrains it asked for. Listed in
:data:`healthpredict.reporting.charts.CHARTS` with the other charts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from healthpredict.monitoring.history import RunHistory
from healthpredict.reporting.figure_parts import mark_batches, reference_trace, style
from healthpredict.reporting.timeline_views import (
    EVENT_STYLE,
    auc_range,
    escape,
    first_onset,
    policy_colour,
    summarise_run,
    timeline_events,
)


def policies_figure(main: RunHistory, runs: Sequence[RunHistory]) -> go.Figure:
    """Realised AUC of every run over the batches; mean AUC against retrains beside it."""
    figure = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.64, 0.36],
        horizontal_spacing=0.1,
        subplot_titles=("realised ROC-AUC per batch", "model quality against retrains"),
    )
    onset = first_onset(main.batches)
    most = max(run.retrains for run in runs)
    for position, run in enumerate(runs):
        # Labels grow away from the right edge, so none is cut off.
        side = "top left" if run.retrains == most > 0 else "top right"
        _add_policy_traces(figure, run, policy_colour(run, position), onset, side)
    mark_batches(figure, main.batches, yref="y domain")
    if math.isfinite(main.reference_auc):
        figure.add_trace(reference_trace(main), row=1, col=1)
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
    return style(figure, height=460)


def _add_policy_traces(
    figure: go.Figure, run: RunHistory, colour: str, onset: int | None, text_side: str
) -> None:
    """The run's realised AUC line with its retrains marked, and its point on the right."""
    batches, label = run.batches, escape(f"{run.name} ({run.policy})")
    line = go.Scatter(
        x=batches["batch"],
        y=batches["realised_auc"],
        mode="lines+markers",
        name=label,
        legendgroup=label,
        line={"color": colour, "width": 2},
        hovertemplate=f"{label}<br>batch %{{x}}: %{{y:.3f}}<extra></extra>",
    )
    events = timeline_events(batches)
    retrains = events[events["kind"] != "quarantined"].merge(batches, on="batch")
    markers = go.Scatter(
        x=retrains["batch"],
        y=retrains["realised_auc"].fillna(retrains["estimated_auc"]),
        mode="markers",
        legendgroup=label,
        showlegend=False,
        hoverinfo="text",
        hovertext=[escape(text) for text in retrains["text"]],
        marker={
            "symbol": [EVENT_STYLE[kind][1] for kind in retrains["kind"]],
            "size": 13,
            "color": colour,
            "line": {"width": 1, "color": "white"},
        },
    )
    summary = summarise_run(run)
    quality = summary.mean_auc_after_onset if onset is not None else summary.mean_auc
    point = go.Scatter(
        x=[summary.retrains],
        y=[quality],
        mode="markers+text",
        text=[label],
        textposition=text_side,
        legendgroup=label,
        showlegend=False,
        cliponaxis=False,
        marker={"size": 16, "color": colour},
        hovertemplate=f"{label}<br>%{{x}} retrains, {summary.promotions} promotions"
        "<br>mean realised ROC-AUC %{y:.3f}<extra></extra>",
    )
    figure.add_trace(line, row=1, col=1)
    figure.add_trace(markers, row=1, col=1)
    figure.add_trace(point, row=1, col=2)
