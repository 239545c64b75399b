"""The first two phases of a simulation step: score the batch, then run the label-free monitors.

Scoring injects the scenarios active on the batch, checks its quality (a batch breaking the
contract is quarantined whole; rows breaking it are set aside), scores it with the champion
through the service's scoring code and logs the predictions as the service does. Monitoring
compares the scored batch with the champion's reference (data drift) and with its first
scored batch (prediction drift), estimates its AUC without labels, and raises the label-free
alarms.

:class:`ScoringAndMonitors` is a base class of
:class:`~healthpredict.pipelines.simulate.Simulation`: these phases read and write the same
run state as the rest of the loop, and this module only keeps the loop's file short.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from healthpredict.data.pseudonym import ENCOUNTER_KEY, PATIENT_KEY
from healthpredict.data.timeline import batch_name
from healthpredict.monitoring import store
from healthpredict.monitoring.drift import (
    DriftMonitor,
    DriftResult,
    DriftThresholds,
    monitored_fields,
)
from healthpredict.monitoring.performance import estimated_auc
from healthpredict.monitoring.quality import check_batch
from healthpredict.monitoring.scenarios import Injection, inject
from healthpredict.pipelines.simulation_pending import PendingStep
from healthpredict.pipelines.simulation_rows import (
    PREDICTED,
    StepRecorder,
    StepRows,
    encounter_records,
    save_reference,
    write_parquet,
)
from healthpredict.serving.model_store import LoadedModel
from healthpredict.settings import Settings

if TYPE_CHECKING:  # the loop imports this module; these are only annotations here
    from healthpredict.pipelines.simulate import SimulationPlan
    from healthpredict.pipelines.simulation_state import LoopState

logger = logging.getLogger(__name__)


class ScoringAndMonitors:
    """The score and monitor phases of the loop (a base class of ``Simulation``)."""

    settings: Settings
    plan: SimulationPlan
    engine: Engine
    folder: Path
    recorder: StepRecorder
    _monitors: dict[str, tuple[DriftMonitor, float]]

    def _score_step(self, step: int, state: LoopState) -> PendingStep:
        """Inject, check, score: a new pending record (phase "scored")."""
        frame, injections = inject(
            self.plan.stream.batches[step - 1], self.plan.scenarios, step, self.settings.seed
        )
        quality = check_batch(frame, self.settings.quality_max_invalid_fraction)
        rows = StepRows(batch={}, injections=[self.recorder.injection_row(i) for i in injections])
        pending = PendingStep(
            step, "scored", state.champion, state.last_promotion_step, rows,
            champion_after=state.champion, confirms=state.confirms, adopted=state.adopted,
        )  # fmt: skip
        if state.adopted:
            self._adopt(state.champion, step, rows)
        if quality.quarantined:
            self._quarantine(step, frame, quality.quarantine_reason or "", None)
            rows.batch = self.recorder.quarantined_row(step, frame, quality, injections)
            pending.text = f"batch {step}: quarantined ({quality.quarantine_reason})"
            return pending
        if quality.n_invalid:
            reason = "rows breaking the contract"
            self._quarantine(step, frame[quality.invalid_rows], reason, "rows")
            frame = frame[~quality.invalid_rows].reset_index(drop=True)
        model = self.plan.slot.load(state.champion)
        probabilities, rows.predictions = self._score(step, model, frame)
        write_parquet(frame.assign(**{PREDICTED: probabilities}), self._scored_path(step))
        # Completed by the monitor phase.
        rows.batch = {"status": "completed", "n_set_aside": quality.n_invalid}
        pending.text = f"batch {step}: scored {len(frame):,} rows with v{state.champion}"
        return pending

    def _monitor_step(self, pending: PendingStep) -> None:
        """Drift, estimate, label-free alarms: the batch row of a scored batch."""
        if not pending.scored:
            return
        step, rows = pending.step, pending.rows
        frame = pd.read_parquet(self._scored_path(step))
        probabilities = frame[PREDICTED].to_numpy()
        started = time.perf_counter()
        monitor, baseline_auc = self._monitor_for(pending.champion, probabilities, rows)
        html = self.folder / "reports" / f"{batch_name(step)}.html"
        drift = monitor.run(frame, probabilities, html)
        estimate = estimated_auc(probabilities)
        alarms = self._label_free_alarms(drift, estimate, baseline_auc)
        seconds = time.perf_counter() - started
        injections = [
            Injection(**{k: v for k, v in row.items() if k != "run"}) for row in rows.injections
        ]
        set_aside = int(rows.batch["n_set_aside"])
        rows.batch = self.recorder.batch_row(
            step, frame, set_aside, injections, drift, estimate, alarms
        )
        rows.batch["monitor_seconds"] = seconds
        rows.features = [{"run": self.plan.run, "batch": step, **asdict(f)} for f in drift.features]
        flagged = ", ".join(drift.drifted_features[:3]) or "none"
        pending.text += (
            f"; drift share {drift.drift_share:.2f} ({flagged}); estimated AUC {estimate:.3f}"
            + (f"; alarms: {'; '.join(alarms)}" if alarms else "")
        )

    def _scored_path(self, step: int) -> Path:
        return self.folder / "batches" / f"{batch_name(step)}.parquet"

    def _score(
        self, step: int, model: LoadedModel, frame: pd.DataFrame
    ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Score through the service's path (fast path when proven), log like the service."""
        encounters = encounter_records(frame)
        probabilities = np.asarray(model.score(encounters, "none").probabilities)
        request = store.LoggedRequest(
            request_id=f"simulation:{self.plan.run}:{step}",
            created_at=datetime.now(UTC),
            model_name=model.name,
            model_version=model.version,
            records=encounters,
            probabilities=probabilities.tolist(),
            risk_bands=_bands(probabilities, self.settings),
            decisions=(probabilities >= self.settings.decision_threshold).tolist(),
            patient_keys=frame[PATIENT_KEY].tolist(),
            encounter_keys=frame[ENCOUNTER_KEY].tolist(),
        )
        return probabilities, request.rows()

    def _adopt(self, version: str, step: int, rows: StepRows) -> None:
        """A champion the loop did not choose: give it a drift reference if it has none.

        A version this run gated has its training data's sample already; another one (a
        training DAG's model, a manual rollback) is monitored against the stream's reference,
        the initial window those models are trained on.
        """
        if (self.folder / "references" / f"v{version}.parquet").is_file():
            return
        logger.warning("v%s was not trained by run %s: its drift reference is the initial "
                       "window", version, self.plan.run)  # fmt: skip
        save_reference(self.folder, version, self.plan.stream.reference, self.settings)
        rows.models.append(
            self.recorder.model_row(
                version, step, self.plan.stream.reference, "outside this run (adopted)", None
            )
        )

    def _monitor_for(
        self, version: str, probabilities: np.ndarray, rows: StepRows
    ) -> tuple[DriftMonitor, float]:
        """The drift monitor of ``version`` and its baseline estimated AUC, built once.

        The model's first batch becomes its baseline if it has none.
        """
        if version not in self._monitors:
            baseline_path = self.folder / "references" / f"v{version}_baseline.parquet"
            if not baseline_path.is_file():
                write_parquet(pd.DataFrame({PREDICTED: probabilities}), baseline_path)
            reference = pd.read_parquet(self.folder / "references" / f"v{version}.parquet")
            baseline = pd.read_parquet(baseline_path)[PREDICTED].to_numpy()
            # Recorded whenever the monitor is built: the same value each time, so a phase
            # retried after writing the file still records it.
            baseline_auc = estimated_auc(baseline)
            rows.baselines[version] = baseline_auc
            importance = field_importance(self.plan.slot.load(version))
            monitor = DriftMonitor(
                reference,
                baseline,
                monitored_fields(importance, self.settings.drift_features),
                DriftThresholds(
                    feature=self.settings.drift_threshold,
                    share=self.settings.drift_share_alarm,
                    single=self.settings.drift_single_feature_alarm,
                    prediction=self.settings.prediction_drift_threshold,
                ),
            )
            self._monitors[version] = (monitor, baseline_auc)
        return self._monitors[version]

    def _label_free_alarms(self, drift: DriftResult, estimate: float, baseline: float) -> list[str]:
        alarms = []
        if drift.dataset_drift:
            top = ", ".join(
                f"{f.feature} {f.statistic:.2f}"
                for f in sorted(drift.features, key=lambda f: -f.statistic)[:3]
                if f.drifted
            )
            alarms.append(f"data_drift: weighted share {drift.drift_share:.2f} (PSI {top})")
        if drift.prediction_drift:
            alarms.append(f"prediction_drift: PSI {drift.prediction_statistic:.3f}")
        if estimate < baseline - self.settings.estimated_auc_drop_alarm:
            alarms.append(f"estimated_performance: AUC {estimate:.3f} vs {baseline:.3f} baseline")
        return alarms

    def _quarantine(self, step: int, frame: pd.DataFrame, reason: str, suffix: str | None) -> None:
        name = batch_name(step) + (f"_{suffix}" if suffix else "")
        path = self.folder / "quarantine" / f"{name}.parquet"
        write_parquet(frame.assign(quarantine_reason=reason), path)


def field_importance(model: LoadedModel) -> pd.Series:
    """Split gain per request field, from the compiled model (empty without a fast path)."""
    compiled = model.compiled
    if compiled is None:
        return pd.Series(dtype=float)
    gains = np.mean(
        [m.booster.feature_importance("gain") @ compiled.group_matrix for m in compiled.members],
        axis=0,
    )
    return pd.Series(gains, index=list(compiled.groups))


def _bands(probabilities: np.ndarray, settings: Settings) -> list[str]:
    from healthpredict.serving.scoring import risk_bands

    return risk_bands(probabilities, settings)
