"""What the loop recorded for a deployment (or a replay), as tidy frames for reports and tables.

:func:`read_history` builds these from the monitoring windows in the store, one row per
window (a replay's window ``n`` is its batch ``n``); the report and the dashboard read nothing
else, so they can be tested on hand-made histories.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
from sqlalchemy import Engine, select

from healthpredict.errors import HealthPredictError
from healthpredict.monitoring import tables
from healthpredict.monitoring.equity import ALARM, GROUP_HISTORY_COLUMNS, group_history

_GROUP_COLUMNS = list(GROUP_HISTORY_COLUMNS)

# Columns of RunHistory.batches, one row per production batch (in order):
BATCH_COLUMNS = (
    "batch",  # int, the window's number (1-based from the origin)
    "batch_name",  # str, e.g. "w003 (2024-01-15)"
    "status",  # "completed" | "quarantined"
    "n_rows",  # int
    "scenarios",  # str, comma-separated names of injected scenarios active in the batch ("")
    "model_version",  # str | None: version that scored the batch (None when quarantined)
    "drift_share",  # float: share of the model's split gain in fields off the reference
    "n_drifted",  # int: contract fields off the reference
    "data_changed",  # bool | None: verdict 1, a field (any) moved in this window
    "moved",  # str: ", "-joined fields that moved in this window ("" when none)
    "dataset_drift",  # bool: verdict 2, input drift: the model's inputs changed enough to matter
    "prediction_drift",  # float: drift statistic of the predicted-risk distribution
    "prediction_drift_detected",  # bool
    "estimated_auc",  # float: label-free estimate, recalibrated on earlier outcomes
    "realised_auc",  # float | NaN until the batch's labels arrive
    "realised_auc_low",  # float | NaN: lower end of its bootstrap interval
    "realised_auc_high",  # float | NaN
    "estimate_error",  # float | NaN: the estimate made when monitored minus the realised AUC
    "alarm",  # bool: any monitor alarmed on this batch
    "alarm_reasons",  # str: "; "-joined reasons ("" when none)
    "group_alarms",  # str: ", "-joined patient groups with an equity alarm ("" when none)
    "decision",  # "none" | "retrain" | "cooldown"
    "outcome",  # "" | "promoted" | "passed" (gate passed, left to delivery) | "refused" | "failed"
    "new_version",  # str | None: challenger version trained at this step
    "quarantine_reason",  # str | None
)


@dataclass(frozen=True)
class RunHistory:
    """One simulation run: its configuration and everything recorded per batch.

    Attributes:
        name: Run name (unique in the store), e.g. "default-drift".
        policy: Policy name: "never", "scheduled" or "drift".
        policy_text: Human description, e.g. "retrain on drift alarm, cooldown 1 batch".
        scenario_set: Name of the scenario set the run replayed.
        batches: One row per batch, columns :data:`BATCH_COLUMNS`.
        feature_drift: Columns batch, feature, statistic, threshold, drifted (bool: off the
            reference), weight, status (see :mod:`healthpredict.monitoring.field_state`),
            since_window, findings (list of dicts), acknowledgement (dict or None); one row per
            contract field per completed batch.
        prediction_quantiles: Columns batch, q05, q25, q50, q75, q95, mean: the predicted
            risk distribution of each completed batch.
        reference_auc: Realised ROC-AUC of the initial champion on its own test data, for a
            reference line.
        stream: "natural" (time order) or "exchangeable" (the no-drift control).
        groups: Each patient group's figures per window, columns
            :data:`~healthpredict.monitoring.equity.GROUP_HISTORY_COLUMNS` (the population
            first, as attribute "all"), for the version that served the window; empty until
            outcomes arrive.
    """

    name: str
    policy: str
    policy_text: str
    scenario_set: str
    batches: pd.DataFrame
    feature_drift: pd.DataFrame
    prediction_quantiles: pd.DataFrame
    reference_auc: float
    stream: str = "natural"
    groups: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=_GROUP_COLUMNS))

    @property
    def retrains(self) -> int:
        """How many retrains the policy asked for (failed ones included)."""
        return int((self.batches["decision"] == "retrain").sum())

    @property
    def promotions(self) -> int:
        """How many challengers the gate promoted."""
        return int((self.batches["outcome"] == "promoted").sum())


class RunNotFoundError(HealthPredictError, LookupError):
    """The monitoring store has no monitored deployment of that name (or none at all)."""


def list_runs(engine: Engine) -> list[str]:
    """Names of the monitored deployments (replays included) in the store, oldest first."""
    runs = tables.loop_runs
    with engine.connect() as connection:
        query = select(runs.c.deployment).order_by(runs.c.created_at)
        return list(connection.execute(query).scalars())


def read_history(engine: Engine, run: str) -> RunHistory:
    """Everything recorded for deployment ``run``, one row per monitored window.

    Raises:
        RunNotFoundError: No such deployment in the store.
    """
    with engine.connect() as connection:
        header = (
            connection.execute(select(tables.loop_runs).where(tables.loop_runs.c.deployment == run))
            .mappings()
            .first()
        )
        if header is None:
            raise RunNotFoundError(f"no monitored deployment or replay {run!r} in the store")
        frames = {
            table.name: pd.read_sql(select(table).where(table.c.deployment == run), connection)
            for table in (
                tables.windows,
                tables.window_versions,
                tables.window_performance,
                tables.decisions,
                tables.feature_drift,
                tables.window_groups,
            )
        }
    policy = header["policy_config"]
    served = _served_rows(frames)
    groups = _served_groups(group_history(frames["window_groups"]), frames["windows"])
    return RunHistory(
        name=run,
        policy=str(policy.get("kind", header["policy"])),
        policy_text=describe_policy_config(header["policy"], policy),
        scenario_set=header["scenario_set"],
        batches=_batch_frame(frames, served, groups),
        feature_drift=_feature_frame(frames["feature_drift"], frames["windows"]),
        prediction_quantiles=_quantile_frame(served),
        reference_auc=float(header["reference_auc"] or float("nan")),
        stream=header["stream"],
        groups=groups,
    )


def describe_policy_config(name: str, config: dict[str, object]) -> str:
    """``name: description`` of a stored policy configuration."""
    from healthpredict.monitoring.policy import describe, parse_policy

    policy = parse_policy(name, config)
    return f"{name}: {describe(policy)}"


_MONITOR_COLUMNS = (
    "drift_share",
    "n_drifted",
    "data_changed",
    "dataset_drift",
    "prediction_drift",
    "prediction_drift_detected",
    "estimated_auc",
)


def _served_rows(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per window, the monitors of the version that served most of it."""
    primary = frames["windows"][["window", "model_version"]]
    return frames["window_versions"].merge(primary, on=["window", "model_version"])


def _served_groups(groups: pd.DataFrame, windows: pd.DataFrame) -> pd.DataFrame:
    """Per window, the group figures of the version that served most of it."""
    primary = windows[["window", "model_version"]].rename(columns={"model_version": "version"})
    return groups.merge(primary, on=["window", "version"]).reset_index(drop=True)


def _group_alarms(groups: pd.DataFrame, windows: pd.Series) -> list[str]:
    """Per window, the groups the equity monitor alarmed on, e.g. "age [40-50), race other"."""
    alarmed = groups[groups["status"] == ALARM]
    names = (alarmed["attribute"] + " " + alarmed["group"]).groupby(alarmed["window"])
    by_window = names.agg(", ".join).to_dict()
    return [by_window.get(window, "") for window in windows]


def _batch_frame(
    frames: dict[str, pd.DataFrame], served: pd.DataFrame, groups: pd.DataFrame
) -> pd.DataFrame:
    windows = frames["windows"].sort_values("window").reset_index(drop=True)
    monitors = served.set_index("window").reindex(windows["window"])
    performance = _performance_by_window(frames["window_performance"], windows)
    decisions = frames["decisions"].set_index("window").reindex(windows["window"])
    out = pd.DataFrame({"batch": windows["window"].to_numpy()})
    out["batch_name"] = [
        f"w{n:03d} ({pd.Timestamp(start):%Y-%m-%d})"
        for n, start in zip(windows["window"], windows["window_start"], strict=True)
    ]
    out["status"] = windows["status"].to_numpy()
    out["n_rows"] = (windows["n_predictions"] + windows["n_rejected"]).to_numpy()
    for column in ("scenarios", "model_version", "quarantine_reason"):
        out[column] = windows[column].to_numpy()
    for column in _MONITOR_COLUMNS:
        out[column] = monitors[column].to_numpy()
    out["moved"] = [", ".join(m) if isinstance(m, list) else "" for m in monitors["moved"]]
    out["realised_auc"] = performance["roc_auc"].to_numpy(dtype=float)
    out["realised_auc_low"] = performance["roc_auc_low"].to_numpy(dtype=float)
    out["realised_auc_high"] = performance["roc_auc_high"].to_numpy(dtype=float)
    out["estimate_error"] = performance["estimate_error"].to_numpy(dtype=float)
    late = [a if isinstance(a, list) else [] for a in performance["alarms"]]
    alarms = [list(free or []) + extra for free, extra in zip(windows["alarms"], late, strict=True)]
    out["alarm"] = [bool(a) for a in alarms]
    out["alarm_reasons"] = ["; ".join(a) for a in alarms]
    out["group_alarms"] = _group_alarms(groups, windows["window"])
    out["decision"] = decisions["action"].fillna("none").to_numpy()
    out["outcome"] = decisions["outcome"].fillna("").to_numpy()
    out["new_version"] = decisions["challenger_version"].to_numpy()
    return out.loc[:, list(BATCH_COLUMNS)].reset_index(drop=True)


def _performance_by_window(performance: pd.DataFrame, windows: pd.DataFrame) -> pd.DataFrame:
    """Per window, the realised performance of the version that served most of it."""
    primary = windows[["window", "model_version"]]
    chosen = performance.merge(primary, on=["window", "model_version"])
    columns = ["roc_auc", "roc_auc_low", "roc_auc_high", "estimate_error", "alarms"]
    return chosen.set_index("window").reindex(windows["window"]).loc[:, columns]


def _feature_frame(features: pd.DataFrame, windows: pd.DataFrame) -> pd.DataFrame:
    columns = [
        "batch",
        "feature",
        "statistic",
        "threshold",
        "drifted",
        "weight",
        "status",
        "since_window",
        "findings",
        "acknowledgement",
    ]
    primary = features.merge(windows[["window", "model_version"]], on=["window", "model_version"])
    frame = primary.rename(columns={"window": "batch"}).loc[:, columns]
    return frame.sort_values(["batch", "feature"]).reset_index(drop=True)


def _quantile_frame(served: pd.DataFrame) -> pd.DataFrame:
    rows = [
        {"batch": number, **quantiles}
        for number, quantiles in zip(served["window"], served["risk_quantiles"], strict=True)
        if isinstance(quantiles, dict)
    ]
    columns = ["batch", "q05", "q25", "q50", "q75", "q95", "mean"]
    return pd.DataFrame(rows, columns=columns).sort_values("batch").reset_index(drop=True)
