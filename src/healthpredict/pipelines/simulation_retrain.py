"""What a simulation step does once labels arrive: decide, retrain, gate.

The labels of the batch scored ``label_delay_batches`` steps ago give its realised performance
and label alarms; the policy weighs them with that batch's label-free alarms (the decide
phase). When it says retrain, a challenger is trained on the policy's window (or found, if an
earlier attempt at the same step registered it already; the retrain phase), then compared with
the champion on the held-out half of the labelled batch's patients (the gate phase). A passing
challenger becomes champion at once when the loop owns the champion role (``promote``, the
``simulate`` command); otherwise the verdict is recorded and a delivery pipeline moves the
alias after a verified rollout (the monitoring DAG). A failed retrain or gate is recorded and
leaves the champion serving.

:class:`LabelsAndRetraining` is a base class of
:class:`~healthpredict.pipelines.simulate.Simulation`: these phases read and write the same
run state as the rest of the loop, and this module only keeps the loop's file short.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine, select

from healthpredict.data.prepare import TARGET
from healthpredict.data.pseudonym import PATIENT_KEY
from healthpredict.data.timeline import batch_name
from healthpredict.modeling.gate import GateDecision
from healthpredict.modeling.gate import decide as decide_gate
from healthpredict.modeling.train import ModelKind, features_of, fit_model
from healthpredict.monitoring import store
from healthpredict.monitoring.performance import (
    RealisedPerformance,
    estimated_auc,
    realised_performance,
)
from healthpredict.monitoring.policy import decide
from healthpredict.monitoring.store import mask_url
from healthpredict.pipelines.model_slots import NewModel
from healthpredict.pipelines.promote import gate_policy
from healthpredict.pipelines.simulation_pending import PendingStep
from healthpredict.pipelines.simulation_rows import (
    PREDICTED,
    StepRecorder,
    encounter_records,
    save_reference,
    write_parquet,
)
from healthpredict.pipelines.streams import split_patients
from healthpredict.settings import Settings

if TYPE_CHECKING:  # the loop imports this module; these are only annotations here
    from healthpredict.pipelines.simulate import SimulationPlan

logger = logging.getLogger(__name__)


class LabelsAndRetraining:
    """The decide, retrain and gate phases of the loop (a base class of ``Simulation``)."""

    settings: Settings
    plan: SimulationPlan
    engine: Engine
    folder: Path
    recorder: StepRecorder
    orchestrated: bool
    _run_key: str

    def _decide_step(self, pending: PendingStep) -> None:
        """Realised performance of the newly labelled batch, its alarms, the policy's decision."""
        step, rows = pending.step, pending.rows
        labelled = step - self.settings.label_delay_batches
        scored = self.folder / "batches" / f"{batch_name(labelled)}.parquet"
        record = self._labelled_record(pending, labelled) if labelled >= 1 else {}
        usable = record.get("status") == "completed" and scored.is_file()
        alarms: list[str] = []
        if usable:
            batch = pd.read_parquet(scored)
            performance = realised_performance(
                batch[TARGET].to_numpy(), batch[PREDICTED].to_numpy(), batch[PATIENT_KEY],
                max(self.settings.bootstrap_rounds, 200), self.settings.confidence_level,
                self.settings.seed,
            )  # fmt: skip
            label_alarms = self._label_alarms(performance)
            alarms = list(record.get("alarms") or []) + label_alarms
            rows.performance = self.recorder.performance_row(
                labelled, step, record.get("model_version") or "", performance, label_alarms
            )
            pending.text += f"; labels of batch {labelled}: AUC {performance.roc_auc}"
        last = pending.last_promotion_step
        since = None if last is None else step - last
        decision = decide(self.plan.policy, labelled if usable else None, alarms, since)
        pending.labelled = labelled if usable else None
        pending.action, pending.reasons = decision.action, list(decision.reasons)
        if decision.action == "cooldown":
            pending.text += "; alarm during cooldown: no retrain"

    def _train_step(self, pending: PendingStep) -> None:
        """Train the challenger on the policy's window (or find the one trained before)."""
        if pending.action != "retrain" or pending.challenger is not None or pending.outcome:
            return
        step, labelled = pending.step, pending.labelled
        assert labelled is not None  # a retrain needs labels
        try:
            slot = self.plan.slot
            challenger = slot.find_challenger(self._run_key, step)
            if challenger is None:
                train, _ = self._training_data(labelled)
                params = self._retrain_params(train, pending.champion)
                fitted = fit_model(
                    ModelKind.LIGHTGBM, train, params, self.settings.cv_folds, self.settings.seed
                )
                tags = {"training_window": f"simulation {self.plan.run} step {step}"}
                new = NewModel(fitted.pipeline, params, features_of(train).head(5), tags)
                challenger = slot.add_challenger(new, self._run_key, step)
            pending.challenger = challenger
        except Exception as error:  # a failed retrain must leave the champion serving
            self._failed(pending, "retrain", error)

    def _gate_step(self, pending: PendingStep, promote: bool) -> None:
        """Gate the challenger on unseen patients; promote it or (not ``promote``) record it."""
        challenger, labelled = pending.challenger, pending.labelled
        if pending.action != "retrain" or challenger is None or pending.outcome:
            return
        assert labelled is not None
        slot, champion = self.plan.slot, pending.champion
        try:
            train, holdout = self._training_data(labelled)
            decision = self._gate(holdout, labelled, champion, challenger)
            slot.record_gate(decision, deferred=not promote)
            baseline_auc: float | None = None
            if decision.promote:
                # The challenger's drift reference and baseline, ready for when it serves.
                save_reference(self.folder, challenger, train, self.settings)
                baseline = (
                    slot.load(challenger).score(encounter_records(holdout), "none").probabilities
                )
                write_parquet(
                    pd.DataFrame({PREDICTED: baseline}),
                    self.folder / "references" / f"v{challenger}_baseline.parquet",
                )
                baseline_auc = estimated_auc(baseline)
                if promote:
                    slot.set_champion(challenger, champion)
                    pending.champion_after = challenger
            window = f"initial + batches 1-{labelled} ({self.plan.policy.window})"
            pending.rows.models.append(
                self.recorder.model_row(challenger, pending.step, train, window, baseline_auc)
            )
            pending.outcome = (
                ("promoted" if promote else "passed") if decision.promote else "refused"
            )
            pending.gate = _jsonable(decision.to_dict())
        except Exception as error:  # a failed gate must leave the champion serving
            self._failed(pending, "gate", error)

    def _failed(self, pending: PendingStep, what: str, error: Exception) -> None:
        """Record a failed retrain or gate; under an orchestrator, an unreachable registry
        fails the task instead, so that it is retried."""
        if self.orchestrated:
            from healthpredict.orchestration.tracking import require_tracking_server

            require_tracking_server(self.settings)
        logger.exception("%s at step %d failed; v%s keeps serving", what, pending.step,
                         pending.champion)  # fmt: skip
        pending.outcome = "failed"
        # Stored and shown on the dashboard: a database or tracking URL must not carry its
        # password there.
        pending.error = mask_url(f"{type(error).__name__}: {error}")[:2000]

    def _labelled_record(self, pending: PendingStep, batch: int) -> dict[str, Any]:
        """Status, label-free alarms and scoring version of ``batch``, read once.

        Without a label delay the batch is this step's own, not committed yet.
        """
        if batch == pending.step:
            return {
                "status": pending.rows.batch.get("status"),
                "alarms": pending.rows.batch.get("alarms", []),
                "model_version": pending.champion if pending.scored else None,
            }
        table = store.simulation_batches
        with self.engine.begin() as connection:
            row = (
                connection.execute(
                    select(table.c.status, table.c.alarms, table.c.model_version).where(
                        table.c.run == self.plan.run, table.c.batch == batch
                    )
                )
                .mappings()
                .first()
            )
        return dict(row) if row else {}

    def _label_alarms(self, performance: RealisedPerformance) -> list[str]:
        alarms = []
        shortfall = performance.auc_shortfall
        if shortfall.high < -self.settings.realised_auc_drop_alarm:
            alarms.append(
                f"realised_performance: AUC {performance.roc_auc} below the estimate "
                f"{performance.estimated_auc:.3f}"
            )
        gap, limit = performance.calibration_gap, self.settings.calibration_gap_alarm
        if gap.low > limit or gap.high < -limit:
            alarms.append(
                f"calibration: observed rate {performance.observed_rate:.3f} vs predicted "
                f"{performance.predicted_rate:.3f} (gap {gap})"
            )
        return alarms

    def _retrain_params(self, train: pd.DataFrame, champion: str) -> dict[str, Any]:
        """The champion's hyper-parameters, or a new search's when the policy asks for one."""
        if not self.plan.policy.search:
            return self.plan.slot.params(champion)
        from healthpredict.pipelines.tune_and_register import searched_params

        return searched_params(train, self.settings)

    def _training_data(self, labelled: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The window up to the labelled batch, and half that batch's patients held out."""
        frames = [self.plan.stream.reference]
        for batch in range(1, labelled):
            path = self.folder / "batches" / f"{batch_name(batch)}.parquet"
            if path.is_file():  # quarantined batches have no labelled file
                frames.append(pd.read_parquet(path).drop(columns=[PREDICTED]))
        latest = pd.read_parquet(self.folder / "batches" / f"{batch_name(labelled)}.parquet").drop(
            columns=[PREDICTED]
        )
        train_part, holdout = split_patients(latest, self.settings.seed + labelled)
        train = pd.concat([*frames, train_part], ignore_index=True)
        if self.plan.policy.window == "sliding":
            size = self.plan.policy.window_rows or len(self.plan.stream.reference)
            train = train.tail(size).reset_index(drop=True)
        return train, holdout

    def _gate(
        self, holdout: pd.DataFrame, labelled: int, champion: str, challenger: str
    ) -> GateDecision:
        slot, records = self.plan.slot, encounter_records(holdout)
        scores = [slot.load(v).score(records, "none").probabilities for v in (champion, challenger)]
        return decide_gate(
            holdout[TARGET].to_numpy(),
            (scores[0], scores[1]),
            holdout[PATIENT_KEY],
            gate_policy(self.settings),
            (champion, challenger),
            f"{batch_name(labelled)}: the half of its patients held out of training",
        )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
