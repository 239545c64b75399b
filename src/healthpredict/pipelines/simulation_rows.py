"""What one simulation step records: its database rows and its parquet files.

A step collects every row it produces in a :class:`StepRows` and hands them to
:meth:`StepRecorder.commit`, which first deletes whatever an earlier attempt at the same step
wrote and then inserts the new rows, all in one transaction. That is what makes a killed run
resume at the first uncommitted batch and a re-run step replace its rows instead of adding to
them. Files are written through a temporary name for the same reason: a killed step never
leaves a truncated one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine, delete, insert

from healthpredict.data.timeline import batch_name
from healthpredict.modeling.train import features_of
from healthpredict.monitoring import store
from healthpredict.monitoring.drift import DriftResult
from healthpredict.monitoring.performance import RealisedPerformance
from healthpredict.monitoring.policy import Decision
from healthpredict.monitoring.quality import QualityResult
from healthpredict.monitoring.scenarios import Injection
from healthpredict.settings import Settings

# The column holding the champion's risk in a scored batch's file.
PREDICTED = "predicted_risk"
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


@dataclass
class StepRows:
    """Everything one step writes, committed together."""

    batch: dict[str, Any]
    features: list[dict[str, Any]] = field(default_factory=list)
    injections: list[dict[str, Any]] = field(default_factory=list)
    predictions: list[dict[str, Any]] = field(default_factory=list)
    performance: dict[str, Any] | None = None
    decision: dict[str, Any] = field(default_factory=dict)
    models: list[dict[str, Any]] = field(default_factory=list)
    # Baseline estimated AUC of versions recorded earlier (a champion's first scored batch).
    baselines: dict[str, float] = field(default_factory=dict)
    # An earlier step whose challenger, passed by the gate, now serves: its outcome becomes
    # "promoted" (set when a delivery pipeline, not the loop, moved the alias).
    promoted_step: int | None = None


def encounter_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The request fields of ``frame`` as the service receives them (missing values as None)."""
    features = features_of(frame)
    return features.astype(object).where(features.notna(), None).to_dict("records")  # type: ignore[return-value]


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Write via a temporary file so a killed step never leaves a truncated file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    frame.to_parquet(temporary, index=False)
    temporary.replace(path)


def save_reference(folder: Path, version: str, train: pd.DataFrame, settings: Settings) -> None:
    """Keep a sample of ``version``'s training data: its drift monitor's reference."""
    sample = train.sample(min(len(train), settings.reference_rows), random_state=0)
    write_parquet(
        features_of(sample).reset_index(drop=True), folder / "references" / f"v{version}.parquet"
    )


class StepRecorder:
    """Builds one run's rows and commits each step's rows in one transaction."""

    def __init__(self, engine: Engine, run: str):
        """Record into ``engine`` under the run name ``run``."""
        self.engine = engine
        self.run = run

    def injection_row(self, injection: Injection) -> dict[str, Any]:
        """The row of one scenario injected into a batch."""
        return {"run": self.run, **asdict(injection)}

    def quarantined_row(
        self, step: int, frame: pd.DataFrame, quality: QualityResult, injections: list[Injection]
    ) -> dict[str, Any]:
        """The batch row of a batch set aside whole, with the reason."""
        return {
            **self._common_batch_row(step, injections),
            "status": "quarantined",
            "n_rows": len(frame),
            "n_set_aside": len(frame),
            "quarantine_reason": quality.quarantine_reason,
            "alarms": [f"quality: {quality.quarantine_reason}"],
        }

    def batch_row(
        self,
        step: int,
        frame: pd.DataFrame,
        n_set_aside: int,
        injections: list[Injection],
        drift: DriftResult,
        estimate: float,
        alarms: list[str],
    ) -> dict[str, Any]:
        """The batch row of a scored batch: drift, estimate, risk quantiles and alarms."""
        risks = frame[PREDICTED].to_numpy()
        quantiles = dict(zip([f"q{round(q * 100):02d}" for q in QUANTILES],
                             np.quantile(risks, QUANTILES).tolist(), strict=True))  # fmt: skip
        return {
            **self._common_batch_row(step, injections),
            "status": "completed",
            "n_rows": len(frame),
            "n_set_aside": n_set_aside,
            "drift_share": drift.drift_share,
            "n_drifted": drift.n_drifted,
            "dataset_drift": drift.dataset_drift,
            "prediction_drift": drift.prediction_statistic,
            "prediction_drift_detected": drift.prediction_drift,
            "estimated_auc": estimate,
            "risk_quantiles": {**quantiles, "mean": float(risks.mean())},
            "alarms": alarms,
            "report_path": str(drift.report_path) if drift.report_path else None,
        }

    def _common_batch_row(self, step: int, injections: list[Injection]) -> dict[str, Any]:
        return {
            "run": self.run,
            "batch": step,
            "batch_name": batch_name(step),
            "scenarios": ", ".join(i.scenario for i in injections),
            "finished_at": datetime.now(UTC),
        }

    def performance_row(
        self,
        batch: int,
        step: int,
        version: str,
        performance: RealisedPerformance,
        alarms: list[str],
    ) -> dict[str, Any]:
        """The realised performance of ``batch`` (scored by ``version``), known at ``step``."""
        auc, shortfall = performance.roc_auc, performance.auc_shortfall
        gap = performance.calibration_gap
        return {
            "run": self.run,
            "batch": batch,
            "known_at_step": step,
            "model_version": version,
            "roc_auc": auc.estimate,
            "roc_auc_low": auc.low,
            "roc_auc_high": auc.high,
            "estimated_auc": performance.estimated_auc,
            "shortfall_low": shortfall.low,
            "shortfall_high": shortfall.high,
            "ece": performance.ece,
            "observed_rate": performance.observed_rate,
            "predicted_rate": performance.predicted_rate,
            "calibration_gap_low": gap.low,
            "calibration_gap_high": gap.high,
            "alarms": alarms,
        }

    def decision_row(
        self,
        step: int,
        labelled: int | None,
        decision: Decision,
        outcome: str,
        champion: str,
        challenger: str | None,
        gate: dict[str, Any] | None,
        error: str | None,
    ) -> dict[str, Any]:
        """The policy's decision at ``step`` and what came of it."""
        return {
            "run": self.run,
            "step": step,
            "labelled_batch": labelled,
            "action": decision.action,
            "reasons": list(decision.reasons),
            "outcome": outcome,
            "champion_version": champion,
            "challenger_version": challenger,
            "gate": gate,
            "error": error,
            "decided_at": datetime.now(UTC),
        }

    def model_row(
        self, version: str, step: int, train: pd.DataFrame, batches: str, baseline: float | None
    ) -> dict[str, Any]:
        """A model version the run trained (or started from), with its training window."""
        return {
            "run": self.run,
            "version": version,
            "trained_at_step": step,
            "training_rows": len(train),
            "training_batches": batches,
            "baseline_estimated_auc": baseline,
            "created_at": datetime.now(UTC),
        }

    def commit(self, step: int, rows: StepRows) -> None:
        """Replace everything this step wrote before (a re-run) and write it, atomically."""
        run = self.run
        with self.engine.begin() as connection:
            for table in (store.simulation_batches, store.feature_drift, store.scenario_injections):
                connection.execute(delete(table).where(table.c.run == run, table.c.batch == step))
            decisions = store.simulation_decisions
            connection.execute(
                delete(decisions).where(decisions.c.run == run, decisions.c.step == step)
            )
            predictions = store.predictions
            connection.execute(
                delete(predictions).where(predictions.c.request_id == f"simulation:{run}:{step}")
            )
            if rows.performance is not None:
                table = store.batch_performance
                labelled = rows.performance["batch"]
                connection.execute(
                    delete(table).where(table.c.run == run, table.c.batch == labelled)
                )
                connection.execute(insert(table), [rows.performance])
            self._upsert_models(connection, rows)
            connection.execute(insert(store.simulation_batches), [rows.batch])
            for table, values in (
                (store.feature_drift, rows.features),
                (store.scenario_injections, rows.injections),
                (store.predictions, rows.predictions),
            ):
                if values:
                    connection.execute(insert(table), values)
            connection.execute(insert(decisions), [rows.decision])
            if rows.promoted_step is not None:
                connection.execute(
                    decisions.update()
                    .where(
                        decisions.c.run == run,
                        decisions.c.step == rows.promoted_step,
                        decisions.c.outcome == "passed",
                    )
                    .values(outcome="promoted")
                )
            connection.execute(
                store.simulation_runs.update()
                .where(store.simulation_runs.c.run == run)
                .values(updated_at=datetime.now(UTC))
            )

    def _upsert_models(self, connection: Any, rows: StepRows) -> None:
        """Replace the rows of the versions this step recorded; set the baselines it measured."""
        table = store.simulation_models
        for model in rows.models:
            key = (table.c.run == self.run) & (table.c.version == model["version"])
            connection.execute(delete(table).where(key))
            connection.execute(insert(table), [model])
        for version, auc in rows.baselines.items():
            key = (table.c.run == self.run) & (table.c.version == version)
            connection.execute(table.update().where(key).values(baseline_estimated_auc=auc))
