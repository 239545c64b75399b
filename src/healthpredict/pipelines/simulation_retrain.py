"""What a simulation step does once labels arrive: realised performance, policy, retrain, gate.

The labels of the batch scored ``label_delay_batches`` steps ago give its realised performance
and label alarms; the policy weighs them with that batch's label-free alarms. When it says
retrain, a challenger is trained on the policy's window (or found, if a killed attempt at the
same step registered it already), compared with the champion on the held-out half of the
labelled batch's patients, and promoted only if the gate says so. A failed retrain is recorded
and leaves the champion serving.

:class:`LabelsAndRetraining` is a base class of
:class:`~healthpredict.pipelines.simulate.Simulation`: these steps read and write the same
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
from healthpredict.modeling.gate import GateDecision, compare, verdict
from healthpredict.modeling.train import ModelKind, features_of, fit_model
from healthpredict.monitoring import store
from healthpredict.monitoring.performance import (
    RealisedPerformance,
    estimated_auc,
    realised_performance,
)
from healthpredict.monitoring.policy import decide
from healthpredict.pipelines.model_slots import NewModel
from healthpredict.pipelines.promote import gate_policy
from healthpredict.pipelines.simulation_rows import (
    PREDICTED,
    StepRecorder,
    StepRows,
    encounter_records,
    write_parquet,
)
from healthpredict.pipelines.streams import split_patients
from healthpredict.settings import Settings

if TYPE_CHECKING:  # the loop imports this module; these are only annotations here
    from healthpredict.pipelines.simulate import LoopState, SimulationPlan

logger = logging.getLogger(__name__)


class LabelsAndRetraining:
    """The label, policy and retraining steps of the loop (a base class of ``Simulation``)."""

    settings: Settings
    plan: SimulationPlan
    engine: Engine
    folder: Path
    recorder: StepRecorder
    _run_key: str

    def _labels_and_policy(self, step: int, state: LoopState, rows: StepRows) -> str:
        labelled = step - self.settings.label_delay_batches
        scored = self.folder / "batches" / f"{batch_name(labelled)}.parquet"
        usable = labelled >= 1 and scored.is_file() and self._was_scored(labelled, step, rows)
        alarms: list[str] = []
        text = ""
        if usable:
            batch = pd.read_parquet(scored)
            performance = realised_performance(
                batch[TARGET].to_numpy(), batch[PREDICTED].to_numpy(), batch[PATIENT_KEY],
                max(self.settings.bootstrap_rounds, 200), self.settings.confidence_level,
                self.settings.seed,
            )  # fmt: skip
            label_alarms = self._label_alarms(performance)
            alarms = self._stored_alarms(labelled, step, rows) + label_alarms
            rows.performance = self.recorder.performance_row(
                labelled, step, performance, label_alarms
            )
            text = f"; labels of batch {labelled}: AUC {performance.roc_auc}"
        since = None if state.last_promotion_step is None else step - state.last_promotion_step
        decision = decide(self.plan.policy, labelled if usable else None, alarms, since)
        outcome, challenger, gate, error = "", None, None, None
        champion_before = state.champion
        if decision.action == "retrain":
            outcome, challenger, gate, error = self._retrain(step, labelled, state, rows)
            if outcome == "promoted":
                state.last_promotion_step = step
            text += f"; retrain -> {outcome}" + (f" v{challenger}" if challenger else "")
        elif decision.action == "cooldown":
            text += "; alarm during cooldown: no retrain"
        rows.decision = self.recorder.decision_row(
            step, labelled if usable else None, decision, outcome, champion_before, challenger,
            gate, error,
        )  # fmt: skip
        return text

    def _was_scored(self, batch: int, step: int, rows: StepRows) -> bool:
        if batch == step:
            return rows.batch.get("status") == "completed"
        with self.engine.begin() as connection:
            status = connection.execute(
                select(store.simulation_batches.c.status).where(
                    store.simulation_batches.c.run == self.plan.run,
                    store.simulation_batches.c.batch == batch,
                )
            ).scalar()
        return status == "completed"

    def _stored_alarms(self, batch: int, step: int, rows: StepRows) -> list[str]:
        if batch == step:
            return list(rows.batch.get("alarms", []))
        with self.engine.begin() as connection:
            alarms = connection.execute(
                select(store.simulation_batches.c.alarms).where(
                    store.simulation_batches.c.run == self.plan.run,
                    store.simulation_batches.c.batch == batch,
                )
            ).scalar()
        return list(alarms or [])

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

    def _retrain(
        self, step: int, labelled: int, state: LoopState, rows: StepRows
    ) -> tuple[str, str | None, dict[str, Any] | None, str | None]:
        """Train a challenger on the policy's window, gate it on unseen patients, promote."""
        try:
            train, holdout = self._training_data(labelled)
            slot = self.plan.slot
            challenger = slot.find_challenger(self._run_key, step)
            if challenger is None:
                params = slot.params(state.champion)
                fitted = fit_model(
                    ModelKind.LIGHTGBM, train, params, self.settings.cv_folds, self.settings.seed
                )
                tags = {"training_window": f"simulation {self.plan.run} step {step}"}
                new = NewModel(fitted.pipeline, params, features_of(train).head(5), tags)
                challenger = slot.add_challenger(new, self._run_key, step)
            decision = self._gate(holdout, labelled, state.champion, challenger)
            slot.record_gate(decision)
            if decision.promote:
                self._save_reference(challenger, train)
                baseline = (
                    slot.load(challenger).score(encounter_records(holdout), "none").probabilities
                )
                write_parquet(
                    pd.DataFrame({PREDICTED: baseline}),
                    self.folder / "references" / f"v{challenger}_baseline.parquet",
                )
                slot.set_champion(challenger, state.champion)
                state.champion = challenger
                baseline_auc: float | None = estimated_auc(baseline)
            else:
                baseline_auc = None
            window = f"initial + batches 1-{labelled} ({self.plan.policy.window})"
            rows.models.append(
                self.recorder.model_row(challenger, step, train, window, baseline_auc)
            )
            outcome = "promoted" if decision.promote else "refused"
            return outcome, challenger, _jsonable(decision.to_dict()), None
        except Exception as error:  # a failed retrain must leave the champion serving
            logger.exception("retrain at step %d failed; v%s keeps serving", step, state.champion)
            return "failed", None, None, f"{type(error).__name__}: {error}"[:2000]

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
        policy = gate_policy(self.settings)
        labels, patients = holdout[TARGET].to_numpy(), holdout[PATIENT_KEY]
        comparison = compare(labels, scores[0], scores[1], patients, policy)
        promote, reason = verdict(comparison, policy)
        return GateDecision(
            champion_version=champion,
            challenger_version=challenger,
            window=f"{batch_name(labelled)}: the half of its patients held out of training",
            n_rows=len(holdout),
            n_patients=int(holdout[PATIENT_KEY].nunique()),
            policy=policy,
            promote=promote,
            reason=reason,
            **vars(comparison),
        )

    def _save_reference(self, version: str, train: pd.DataFrame) -> None:
        """Keep a sample of ``version``'s training data: its drift monitor's reference."""
        sample = train.sample(min(len(train), self.settings.reference_rows), random_state=0)
        write_parquet(
            features_of(sample).reset_index(drop=True),
            self.folder / "references" / f"v{version}.parquet",
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
