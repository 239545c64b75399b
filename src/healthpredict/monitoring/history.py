"""What a simulation run left in the monitoring store, as tidy frames for reports and tables.

:func:`healthpredict.monitoring.store.read_history` builds these from the store; the report
and the dashboard read nothing else, so they can be tested on hand-made histories.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from sqlalchemy import Engine, select

from healthpredict.monitoring import store

# Columns of RunHistory.batches, one row per production batch (in order):
BATCH_COLUMNS = (
    "batch",  # int, 1-based position in the stream
    "batch_name",  # str, e.g. "batch_003"
    "status",  # "completed" | "quarantined"
    "n_rows",  # int
    "scenarios",  # str, comma-separated names of injected scenarios active in the batch ("")
    "model_version",  # str | None: version that scored the batch (None when quarantined)
    "drift_share",  # float: importance-weighted share of monitored features that drifted
    "n_drifted",  # int: monitored features flagged
    "dataset_drift",  # bool: the dataset-level verdict
    "prediction_drift",  # float: drift statistic of the predicted-risk distribution
    "prediction_drift_detected",  # bool
    "estimated_auc",  # float: label-free estimate from the calibrated probabilities
    "realised_auc",  # float | NaN until the batch's labels arrive
    "realised_auc_low",  # float | NaN: lower end of its bootstrap interval
    "realised_auc_high",  # float | NaN
    "alarm",  # bool: any monitor alarmed on this batch
    "alarm_reasons",  # str: "; "-joined reasons ("" when none)
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
        feature_drift: Columns batch, feature, statistic, threshold, drifted (bool); one row
            per monitored feature per completed batch.
        prediction_quantiles: Columns batch, q05, q25, q50, q75, q95, mean: the predicted
            risk distribution of each completed batch.
        reference_auc: Realised ROC-AUC of the initial champion on its own test data, for a
            reference line.
        stream: "natural" (time order) or "exchangeable" (the no-drift control).
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

    @property
    def retrains(self) -> int:
        """How many retrains the policy asked for (failed ones included)."""
        return int((self.batches["decision"] == "retrain").sum())

    @property
    def promotions(self) -> int:
        """How many challengers the gate promoted."""
        return int((self.batches["outcome"] == "promoted").sum())


class RunNotFoundError(LookupError):
    """The monitoring store has no simulation run of that name (or none at all)."""


def list_runs(engine: Engine) -> list[str]:
    """Names of the simulation runs in the store, oldest first."""
    runs = store.simulation_runs
    with engine.begin() as connection:
        return list(connection.execute(select(runs.c.run).order_by(runs.c.created_at)).scalars())


def read_history(engine: Engine, run: str) -> RunHistory:
    """Everything recorded for ``run``, one row per batch.

    Raises:
        RunNotFoundError: No such run in the store.
    """
    with engine.begin() as connection:
        header = (
            connection.execute(
                select(store.simulation_runs).where(store.simulation_runs.c.run == run)
            )
            .mappings()
            .first()
        )
        if header is None:
            raise RunNotFoundError(f"no simulation run {run!r} in the monitoring store")
        frames = {
            table.name: pd.read_sql(select(table).where(table.c.run == run), connection)
            for table in (
                store.simulation_batches,
                store.batch_performance,
                store.simulation_decisions,
                store.feature_drift,
            )
        }
    policy = header["policy_config"]
    return RunHistory(
        name=run,
        policy=str(policy.get("kind", header["policy"])),
        policy_text=describe_policy_config(header["policy"], policy),
        scenario_set=header["scenario_set"],
        batches=_batch_frame(frames),
        feature_drift=_feature_frame(frames["feature_drift"]),
        prediction_quantiles=_quantile_frame(frames["simulation_batches"]),
        reference_auc=float(header["reference_auc"] or float("nan")),
        stream=header["stream"],
    )


def describe_policy_config(name: str, config: dict[str, object]) -> str:
    """``name: description`` of a stored policy configuration."""
    from healthpredict.monitoring.policy import describe, parse_policy

    policy = parse_policy(name, config)
    return f"{name}: {describe(policy)}"


def _batch_frame(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    batches = frames["simulation_batches"].sort_values("batch")
    performance = frames["batch_performance"].set_index("batch")
    decisions = frames["simulation_decisions"].set_index("step")
    out = pd.DataFrame({"batch": batches["batch"].to_numpy()})
    for column in ("batch_name", "status", "n_rows", "scenarios", "model_version",
                   "drift_share", "n_drifted", "dataset_drift", "prediction_drift",
                   "prediction_drift_detected", "estimated_auc", "quarantine_reason"):  # fmt: skip
        out[column] = batches[column].to_numpy()
    realised = performance.reindex(out["batch"])
    out["realised_auc"] = realised["roc_auc"].to_numpy(dtype=float)
    out["realised_auc_low"] = realised["roc_auc_low"].to_numpy(dtype=float)
    out["realised_auc_high"] = realised["roc_auc_high"].to_numpy(dtype=float)
    label_alarms = [a if isinstance(a, list) else [] for a in realised["alarms"]]
    all_alarms = [
        list(free or []) + late for free, late in zip(batches["alarms"], label_alarms, strict=True)
    ]
    out["alarm"] = [bool(a) for a in all_alarms]
    out["alarm_reasons"] = ["; ".join(a) for a in all_alarms]
    step = decisions.reindex(out["batch"])
    out["decision"] = step["action"].fillna("none").to_numpy()
    out["outcome"] = step["outcome"].fillna("").to_numpy()
    out["new_version"] = step["challenger_version"].to_numpy()
    return out.loc[:, list(BATCH_COLUMNS)].reset_index(drop=True)


def _feature_frame(features: pd.DataFrame) -> pd.DataFrame:
    columns = ["batch", "feature", "statistic", "threshold", "drifted"]
    return features.loc[:, columns].sort_values(["batch", "feature"]).reset_index(drop=True)


def _quantile_frame(batches: pd.DataFrame) -> pd.DataFrame:
    rows = [
        {"batch": batch, **quantiles}
        for batch, quantiles in zip(batches["batch"], batches["risk_quantiles"], strict=True)
        if isinstance(quantiles, dict)
    ]
    columns = ["batch", "q05", "q25", "q50", "q75", "q95", "mean"]
    return pd.DataFrame(rows, columns=columns).sort_values("batch").reset_index(drop=True)
