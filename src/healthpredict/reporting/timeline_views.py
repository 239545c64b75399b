"""Plain data views over a :class:`RunHistory`, shared by the dashboard and the PNG report.

Summaries, scenario spans and lanes, timeline events, the drift severity matrix, and the
colours and labels that make the interactive page (:mod:`healthpredict.reporting.dashboard`)
and the static PNGs (:mod:`healthpredict.reporting.timeline_plots`) agree. Pure functions on
pandas frames: no plotting library is imported here.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from healthpredict.monitoring.history import RunHistory

POLICY_COLOURS = {"never": "#7f7f7f", "scheduled": "#1f77b4", "drift": "#d62728"}
FALLBACK_COLOURS = ("#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
# Event kind -> (colour, plotly marker symbol, legend label).
EVENT_STYLE = {
    "promoted": ("#2ca02c", "star", "retrain, challenger promoted"),
    "retrain": ("#ff7f0e", "triangle-down", "retrain, champion kept"),
    "quarantined": ("#6b4c3b", "x", "batch quarantined"),
}
SCENARIO_SHADE = "#fdf1e1"  # a light tint: the shading is context, the data stays on top
QUARANTINE_SHADE = "#ebebeb"
SEVERITY_CAP = 3.0  # colours saturate at 3x the threshold; hover shows the raw statistic
HEATMAP_FIELDS = 24  # of the contract's 47 fields, the ones that were ever off the reference
QUIET_FIELDS = 8  # shown when none was: the closest to their thresholds
# A batch's bar by its data verdicts: the model's inputs moved enough to matter, a field moved,
# nothing moved (fields may still be off the reference, settled in their new state).
VERDICT_COLOURS = {"input drift": "#d62728", "data changed": "#ff7f0e", "no move": "#6baed6"}
VERSION_COLOURS = ("#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b")
# Below the threshold greys to blues, above it oranges to dark red: the threshold is the edge.
SEVERITY_SCALE: list[tuple[float, str]] = [
    (0.0, "#f4f6f9"),
    (0.999 / SEVERITY_CAP, "#9ecae1"),
    (1.0 / SEVERITY_CAP, "#fdae6b"),
    (2.0 / SEVERITY_CAP, "#e6550d"),
    (1.0, "#7f2704"),
]


@dataclass(frozen=True)
class PolicySummary:
    """One run's model quality against what it cost, for the policy comparison.

    Attributes:
        mean_auc: Mean realised ROC-AUC over the batches whose labels arrived (NaN: none).
        mean_auc_after_onset: The same from the first batch with an injected scenario on
            (NaN when the run injected nothing).
    """

    name: str
    policy: str
    policy_text: str
    mean_auc: float
    mean_auc_after_onset: float
    retrains: int
    promotions: int
    quarantined: int


def find_run(runs: Sequence[RunHistory], name: str) -> RunHistory:
    """The run called ``name``; ValueError naming the runs there are otherwise."""
    for run in runs:
        if run.name == name:
            return run
    raise ValueError(f"no run {name!r} among {[run.name for run in runs]}")


def policy_colour(run: RunHistory, position: int) -> str:
    """Stable colour per policy, so the same policy looks the same on every chart."""
    return POLICY_COLOURS.get(run.policy, FALLBACK_COLOURS[position % len(FALLBACK_COLOURS)])


def first_onset(batches: pd.DataFrame) -> int | None:
    """First batch with an injected scenario active, or None."""
    active = batches.loc[_scenarios(batches) != "", "batch"]
    return int(active.iloc[0]) if len(active) else None


def active_spans(batches: pd.DataFrame) -> list[tuple[int, int]]:
    """Runs of consecutive batches with any injected scenario active: (first, last)."""
    return _spans(
        [int(b) for b, names in zip(batches["batch"], _scenarios(batches), strict=True) if names]
    )


def scenario_lanes(batches: pd.DataFrame) -> dict[str, list[tuple[int, int]]]:
    """Per injected scenario (in order of onset), the runs of batches it was active in.

    One lane per scenario reads as a timeline of the ground truth, where one label per
    stretch of batches overlaps as soon as scenarios overlap.
    """
    active: dict[str, list[int]] = {}
    for batch, names in zip(batches["batch"].astype(int), _scenarios(batches), strict=True):
        for name in filter(None, (part.strip() for part in names.split(","))):
            active.setdefault(name, []).append(batch)
    return {name: _spans(numbers) for name, numbers in active.items()}


def describe_policy(run: RunHistory) -> str:
    """The policy and its description, without saying the name twice."""
    if run.policy_text.startswith(f"{run.policy}:") or run.policy_text == run.policy:
        return run.policy_text
    return f"{run.policy}: {run.policy_text}"


def summarise_run(run: RunHistory) -> PolicySummary:
    """Mean realised AUC (overall and from the first scenario on), retrains, promotions."""
    batches = run.batches
    onset = first_onset(batches)
    after = batches[batches["batch"] >= onset] if onset is not None else batches.iloc[0:0]
    return PolicySummary(
        name=run.name,
        policy=run.policy,
        policy_text=run.policy_text,
        mean_auc=_mean(batches["realised_auc"]),
        mean_auc_after_onset=_mean(after["realised_auc"]),
        retrains=run.retrains,
        promotions=run.promotions,
        quarantined=int((batches["status"] == "quarantined").sum()),
    )


def timeline_events(batches: pd.DataFrame) -> pd.DataFrame:
    """Retrains, promotions and quarantines as rows: batch, kind (:data:`EVENT_STYLE`), text."""
    rows = []
    for row in batches.to_dict("records"):
        batch = int(row["batch"])
        if row["status"] == "quarantined":
            reason = text_of(row["quarantine_reason"]) or "no reason recorded"
            rows.append((batch, "quarantined", f"batch {batch} quarantined: {reason}"))
        elif row["decision"] == "retrain":
            outcome = text_of(row["outcome"]) or "no outcome recorded"
            challenger = version_label(row["new_version"])
            text = f"batch {batch}: retrain"
            text += f", challenger {challenger} {outcome}" if challenger != "-" else f" {outcome}"
            if reasons := text_of(row["alarm_reasons"]):
                text += f" ({reasons})"
            kind = "promoted" if outcome == "promoted" else "retrain"
            rows.append((batch, kind, text))
    return pd.DataFrame(rows, columns=["batch", "kind", "text"])


def drift_severity(feature_drift: pd.DataFrame) -> pd.Series:
    """How far each field's distribution statistic went past its calibrated threshold: 1 is
    the threshold. A field off the reference by a quality check alone (new values, format,
    missingness, cardinality) shows at least 1, one that is not below 1."""
    statistic = feature_drift["statistic"].astype(float).to_numpy()
    threshold = feature_drift["threshold"].astype(float).to_numpy()
    drifted = feature_drift["drifted"].astype(bool).to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(
            threshold > 0, statistic / threshold, np.where(statistic > 0, SEVERITY_CAP, 0.0)
        )
    ratio = np.where(drifted, np.maximum(ratio, 1.0), np.minimum(ratio, 0.99))
    return pd.Series(np.clip(ratio, 0.0, SEVERITY_CAP), index=feature_drift.index)


def drift_matrix(run: RunHistory, value: str = "severity") -> pd.DataFrame:
    """Fields (rows, most often off the reference first; only those ever off it, at most
    :data:`HEATMAP_FIELDS`, or the closest few when none was) by batch (columns, every batch
    of the run).

    ``value`` is "severity" (:func:`drift_severity`), "statistic" or "threshold"; cells of
    batches without drift rows (quarantined) are NaN.
    """
    batches = [int(batch) for batch in run.batches["batch"]]
    frame = run.feature_drift
    if frame.empty:
        return pd.DataFrame(index=pd.Index([], name="feature"), columns=batches, dtype=float)
    frame = frame.assign(severity=drift_severity(frame))
    severity = frame.pivot_table(index="feature", columns="batch", values="severity")
    rank = pd.DataFrame({"drifted": (severity >= 1).sum(axis=1), "mean": severity.mean(axis=1)})
    rank = rank.sort_values(["drifted", "mean"], ascending=False)
    ever = rank.index[rank["drifted"] > 0]
    order = (ever if len(ever) else rank.index[:QUIET_FIELDS])[:HEATMAP_FIELDS]
    table = frame.pivot_table(index="feature", columns="batch", values=value, aggfunc="max")
    return table.reindex(index=order, columns=batches).astype(float)


def auc_range(values: Sequence[pd.Series | float]) -> list[float]:
    """A y range for AUC values: padded, at least 0.04 wide, a default when nothing is known.

    Without the minimum width one flat value gets a range of 1e-6 and five identical ticks.
    """
    finite = [float(v) for item in values for v in np.atleast_1d(item) if np.isfinite(v)]
    if not finite:
        return [0.5, 0.8]
    low, high = min(finite), max(finite)
    centre, half = (low + high) / 2, max((high - low) / 2 * 1.25, 0.02)
    return [centre - half, centre + half]


def version_label(version: object) -> str:
    """Registry version 3 as "v3", other labels as they are, "-" for none."""
    text = text_of(version)
    if not text:
        return "-"
    return f"v{text}" if text.isdigit() else text


def text_of(value: object) -> str:
    """Text of a cell read from the store, "" for None and NaN (pandas' missing values)."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def escape(value: object) -> str:
    """HTML-escaped text of ``value`` (quotes included: some of it lands in attributes)."""
    return html.escape(str(value), quote=True)


def _spans(numbers: list[int]) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for number in sorted(numbers):
        if spans and spans[-1][1] == number - 1:
            spans[-1] = (spans[-1][0], number)
        else:
            spans.append((number, number))
    return spans


def _scenarios(batches: pd.DataFrame) -> pd.Series:
    return batches["scenarios"].fillna("").astype(str).str.strip()


def _mean(values: pd.Series) -> float:
    known = values.astype(float).dropna()
    return float(known.mean()) if len(known) else math.nan
