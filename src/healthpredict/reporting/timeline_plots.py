"""The dashboard's views as static PNG files (matplotlib): for the README, a report, a PR.

Same data, same colours and the same derived views (:mod:`healthpredict.reporting.timeline_views`)
as :mod:`healthpredict.reporting.dashboard`, so a PNG and the interactive page never disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display.
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure

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
    find_run,
    first_onset,
    policy_colour,
    scenario_lanes,
    summarise_run,
    timeline_events,
    version_label,
)

# Plotly marker symbols of EVENT_STYLE, in matplotlib's names.
MARKERS = {"star": "*", "triangle-down": "v", "x": "X"}
SEVERITY_CMAP = LinearSegmentedColormap.from_list("severity", SEVERITY_SCALE)


def write_report_pngs(runs: Sequence[RunHistory], main_run: str, folder: Path) -> list[Path]:
    """Write the drift heatmap, AUC timeline, risk distribution and policy comparison PNGs.

    Args:
        runs: Runs of the same batches under different policies (the main run among them).
        main_run: Name of the run the timeline plots show.
        folder: Where the files go (created).

    Returns:
        The paths written, in that order.
    """
    run = find_run(runs, main_run)
    folder.mkdir(parents=True, exist_ok=True)
    return [
        plot_drift_heatmap(run, folder / "drift_heatmap.png"),
        plot_auc_timeline(run, folder / "auc_timeline.png"),
        plot_prediction_distribution(run, folder / "prediction_distribution.png"),
        plot_policy_comparison(list(runs), run, folder / "policy_comparison.png"),
    ]


def plot_drift_heatmap(run: RunHistory, path: Path) -> Path:
    """Drift share per batch above a feature-by-batch heatmap of statistic / threshold."""
    batches, severity = run.batches, drift_matrix(run)
    figure, axes = _timeline_axes(batches, share=1.1, features=0.28 * max(len(severity), 4))
    top, bottom = axes["share"], axes["features"]
    verdict = np.where(
        batches["dataset_drift"].eq(True),
        "input drift",
        np.where(batches["data_changed"].eq(True), "data changed", "no move"),
    )
    share = batches["drift_share"]
    bars = top.bar(batches["batch"], share, color=[VERDICT_COLOURS[v] for v in verdict])
    top.bar_label(bars, [f"{value:.0%}" if pd.notna(value) else "" for value in share], fontsize=8)
    peak = float(share.fillna(0).max()) if len(share) else 0.0
    top.set_ylim(0, max(peak, 0.05) * 1.45)  # room for the labels
    top.yaxis.set_major_formatter(plt.FuncFormatter(lambda value, _: f"{value:.0%}"))
    top.set_ylabel("gain off ref.")
    figure.suptitle(f"Data drift per batch, run {run.name}")
    _mark_batches(top, batches)
    if severity.empty:
        bottom.text(
            0.5, 0.85, "no per-feature drift recorded", ha="center", transform=bottom.transAxes
        )
        bottom.set_yticks([])
    else:
        _draw_heatmap(figure, bottom, severity)
    bottom.set_facecolor(QUARANTINE_SHADE)  # batches without drift rows show through grey
    for batch in batches.loc[batches["status"] == "quarantined", "batch"]:
        bottom.text(batch, 0.5, "quarantined", rotation=90, ha="center", va="center",
                    transform=bottom.get_xaxis_transform(), color="#6b4c3b")  # fmt: skip
    _batch_axis(bottom, batches)
    return _save(figure, path)


def _draw_heatmap(figure: Figure, axis: Axes, severity: pd.DataFrame) -> None:
    columns = severity.columns.to_numpy()
    image = axis.imshow(
        np.ma.masked_invalid(severity.to_numpy()), aspect="auto", cmap=SEVERITY_CMAP,
        vmin=0, vmax=SEVERITY_CAP, interpolation="nearest",
        extent=(columns.min() - 0.5, columns.max() + 0.5, len(severity) - 0.5, -0.5),
    )  # fmt: skip
    axis.set_yticks(range(len(severity)), severity.index)
    bar = figure.colorbar(image, ax=axis, ticks=[0, 1, 2, 3], fraction=0.04, pad=0.01)
    bar.ax.set_yticklabels(["0", "1 threshold", "2", "≥ 3"])
    bar.set_label("statistic / threshold")


def plot_auc_timeline(run: RunHistory, path: Path) -> Path:
    """Realised AUC with its interval, estimated AUC, the reference and the events."""
    batches = run.batches
    figure, axes = _timeline_axes(batches, events=0.35, main=3.6)
    axis = axes["main"]
    x = batches["batch"].to_numpy()
    low, high = batches["realised_auc_low"].to_numpy(), batches["realised_auc_high"].to_numpy()
    axis.fill_between(x, low, high, color="#d2e3f3", label="realised, bootstrap interval")
    axis.vlines(x, low, high, color="#9ecae1", linewidth=1)  # lone batches have no band
    axis.plot(x, batches["realised_auc"], marker="o", color="#1f77b4", lw=2.2, label="realised")
    axis.plot(
        x, batches["estimated_auc"], marker="o", markerfacecolor="white", linestyle="--",
        color="#9467bd", label="estimated (no labels needed)",
    )  # fmt: skip
    if np.isfinite(run.reference_auc):
        reference = f"initial champion on its test window ({run.reference_auc:.3f})"
        axis.axhline(run.reference_auc, linestyle=":", color="#52606d", label=reference)
    pending = batches[(batches["status"] == "completed") & batches["realised_auc"].isna()]
    for batch in pending["batch"]:
        axis.text(batch, 0.02, "labels\npending", ha="center", fontsize=8, color="#7b8794",
                  transform=axis.get_xaxis_transform())  # fmt: skip
    _add_events(axes["events"], axis, batches)
    _mark_batches(axis, batches)
    values = [batches[name] for name in ("realised_auc_low", "realised_auc_high", "estimated_auc")]
    axis.set_ylim(*auc_range([*values, run.reference_auc]))
    axis.set_ylabel("ROC-AUC")
    figure.suptitle(f"Model quality over time, run {run.name}")
    _batch_axis(axis, batches)
    figure.legend(loc="outside lower center", ncols=3, fontsize=8)
    return _save(figure, path)


def _timeline_axes(batches: pd.DataFrame, **rows_in: float) -> tuple[Figure, dict[str, Axes]]:
    """Axes stacked on the batch axis: the scenario lane (when there are scenarios), then
    ``rows_in`` (name: height in inches) in order."""
    lanes = scenario_lanes(batches)
    heights = ({"scenarios": 0.22 * len(lanes) + 0.15} if lanes else {}) | rows_in
    figure, axes = plt.subplots(
        len(heights), 1, sharex=True, squeeze=False, layout="constrained",
        figsize=(9, sum(heights.values()) + 1.4), height_ratios=list(heights.values()),
    )  # fmt: skip
    by_name = dict(zip(heights, axes[:, 0], strict=True))
    if lanes:
        _scenario_lane(by_name["scenarios"], lanes)
    return figure, by_name


def _scenario_lane(axis: Axes, lanes: dict[str, list[tuple[int, int]]]) -> None:
    """One bar per scenario and stretch of batches it was active in, named on the axis."""
    for position, spans in enumerate(lanes.values()):
        ranges = [(first - 0.5, last - first + 1) for first, last in spans]
        axis.broken_barh(ranges, (position - 0.3, 0.6), color="#f5a05a")
    axis.set_yticks(range(len(lanes)), list(lanes), fontsize=8)
    axis.set_ylim(len(lanes) - 0.5, -0.5)  # first onset on top
    axis.tick_params(axis="x", bottom=False)
    for side in ("top", "right", "left"):
        axis.spines[side].set_visible(False)


def plot_prediction_distribution(run: RunHistory, path: Path) -> Path:
    """Predicted risk per batch as boxes (25-75 %, whiskers 5-95 %), coloured by model."""
    batches, quantiles = run.batches, run.prediction_quantiles
    versions = batches.set_index("batch")["model_version"].map(version_label)
    figure, axis = plt.subplots(figsize=(9, 4.2), layout="constrained")
    colours: dict[str, str] = {}
    legend: dict[str, Artist] = {}
    for row in quantiles.to_dict("records"):
        version = str(versions.get(row["batch"], "-"))
        colour = colours.setdefault(version, VERSION_COLOURS[len(colours) % len(VERSION_COLOURS)])
        stats = {"med": row["q50"], "q1": row["q25"], "q3": row["q75"], "whislo": row["q05"],
                 "whishi": row["q95"], "mean": row["mean"]}  # fmt: skip
        boxes = axis.bxp(
            [stats], positions=[row["batch"]], widths=0.5, showmeans=True, meanline=True,
            showfliers=False, patch_artist=True, manage_ticks=False,
            boxprops={"facecolor": colour, "alpha": 0.55, "edgecolor": colour},
            medianprops={"color": "black"}, meanprops={"color": "black", "linestyle": "--"},
        )  # fmt: skip
        legend[f"scored by model {version}"] = boxes["boxes"][0]
    if legend:
        axis.legend(list(legend.values()), list(legend), loc="upper left", fontsize=8)
    axis.yaxis.set_major_formatter(plt.FuncFormatter(lambda value, _: f"{value:.0%}"))
    _mark_batches(axis, batches)
    axis.margins(y=0.1)
    title = "Predicted risk per batch (box 25-75 %, whiskers 5-95 %, dashed line mean)"
    axis.set(ylabel="predicted 30-day readmission risk", title=title)
    _batch_axis(axis, batches)
    return _save(figure, path)


def plot_policy_comparison(runs: list[RunHistory], main: RunHistory, path: Path) -> Path:
    """Realised AUC per batch for each run, and mean realised AUC against retrains."""
    figure, (left, right) = plt.subplots(
        1, 2, figsize=(11, 4.4), width_ratios=[1.8, 1], layout="constrained"
    )
    onset = first_onset(main.batches)
    for position, run in enumerate(runs):
        colour, batches = policy_colour(run, position), run.batches
        left.plot(batches["batch"], batches["realised_auc"], marker="o", markersize=4,
                  color=colour, label=f"{run.name} ({run.policy})")  # fmt: skip
        events = timeline_events(batches).merge(batches, on="batch")
        for row in events[events["kind"] != "quarantined"].to_dict("records"):
            y = row["realised_auc"] if pd.notna(row["realised_auc"]) else row["estimated_auc"]
            marker = MARKERS[EVENT_STYLE[row["kind"]][1]]
            left.plot(row["batch"], y, marker=marker, markersize=11, color=colour, mec="white")
        summary = summarise_run(run)
        quality = summary.mean_auc_after_onset if onset is not None else summary.mean_auc
        right.scatter(summary.retrains, quality, s=120, color=colour, zorder=3)
        right.annotate(run.name, (summary.retrains, quality), xytext=(0, 9),
                       textcoords="offset points", ha="center", fontsize=8)  # fmt: skip
    if np.isfinite(main.reference_auc):
        left.axhline(main.reference_auc, linestyle=":", color="#52606d", label="initial champion")
    _mark_batches(left, main.batches)
    left.set_ylim(*auc_range([*(run.batches["realised_auc"] for run in runs), main.reference_auc]))
    left.set(xlabel="production batch", ylabel="realised ROC-AUC", title="Policies over time")
    left.legend(loc="lower left", fontsize=8)
    after = f"from batch {onset}" if onset is not None else "all batches"
    right.set(xlabel="retrains asked for", ylabel=f"mean realised ROC-AUC, {after}",
              title="Model quality against retrains")  # fmt: skip
    right.set_xlim(-0.6, max(run.retrains for run in runs) + 0.6)
    right.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    right.margins(y=0.2)
    return _save(figure, path)


def _save(figure: Figure, path: Path) -> Path:
    """As :mod:`healthpredict.reporting.plots` saves, minus its tight_layout: these figures
    use constrained layout, which keeps stacked axes aligned beside a colour bar."""
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _add_events(lane: Axes, axis: Axes, batches: pd.DataFrame) -> None:
    """Event markers in their own lane above ``axis``, a dotted line down through both."""
    events = timeline_events(batches)
    for kind, (colour, symbol, label) in EVENT_STYLE.items():
        chosen = events[events["kind"] == kind]
        for batch in chosen["batch"]:
            for target in (lane, axis):
                target.axvline(batch, color=colour, linestyle=":", linewidth=1.4)
        if not chosen.empty:
            lane.plot(chosen["batch"], [0] * len(chosen), linestyle="none", color=colour,
                      marker=MARKERS[symbol], markersize=11, label=label)  # fmt: skip
    lane.set_ylim(-1, 1)
    lane.set_yticks([0], ["events"], fontsize=8)
    lane.tick_params(axis="x", bottom=False)
    for side in ("top", "right", "left"):
        lane.spines[side].set_visible(False)


def _mark_batches(axis: Axes, batches: pd.DataFrame) -> None:
    """Shade batches with injected scenarios and quarantined ones."""
    for first, last in active_spans(batches):
        axis.axvspan(first - 0.5, last + 0.5, color=SCENARIO_SHADE, zorder=0)
    for batch in batches.loc[batches["status"] == "quarantined", "batch"]:
        axis.axvspan(batch - 0.5, batch + 0.5, color=QUARANTINE_SHADE, zorder=0)


def _batch_axis(axis: Axes, batches: pd.DataFrame) -> None:
    numbers = batches["batch"].astype(int)
    axis.set_xlim(numbers.min() - 0.5, numbers.max() + 0.5)
    if len(numbers) <= 40:
        axis.set_xticks(numbers.tolist())
    axis.set_xlabel("production batch")
