"""Flow: replay production batches over simulated time, monitor, retrain, gate, record.

Each step handles one batch: inject the scenarios active on it, check its quality (quarantine),
score it with the champion through the service's scoring code, run the monitors, learn the
labels of the batch that has waited ``label_delay_batches`` steps, let the policy decide,
retrain and gate when it says so, and commit everything the step produced in one database
transaction. A killed run therefore resumes at the first uncommitted batch, and re-running a
batch replaces its rows instead of adding to them. Model versions are the one side effect
outside the transaction: a resumed step finds the challenger it registered before (by run and
step) instead of training another, and a champion alias moved by an uncommitted step is put
back before the step runs again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit
from sqlalchemy import Engine, delete, insert, select

from healthpredict.data.prepare import TARGET
from healthpredict.data.pseudonym import ENCOUNTER_KEY, PATIENT_KEY
from healthpredict.data.timeline import INITIAL_WINDOW, batch_name, load_manifest, load_window
from healthpredict.modeling.gate import GateDecision, compare, verdict
from healthpredict.modeling.train import ModelKind, features_of, fit_model
from healthpredict.monitoring import store
from healthpredict.monitoring.drift import (
    DriftMonitor,
    DriftResult,
    DriftThresholds,
    monitored_fields,
)
from healthpredict.monitoring.history import RunHistory
from healthpredict.monitoring.performance import (
    RealisedPerformance,
    estimated_auc,
    realised_performance,
)
from healthpredict.monitoring.policy import Decision, Policy, decide
from healthpredict.monitoring.quality import QualityResult, check_batch
from healthpredict.monitoring.scenarios import Injection, ScenarioSet, inject
from healthpredict.pipelines.model_slots import FolderSlot, ModelSlot, NewModel
from healthpredict.pipelines.promote import gate_policy
from healthpredict.serving.model_store import LoadedModel
from healthpredict.settings import Settings

logger = logging.getLogger(__name__)
PREDICTED = "predicted_risk"
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
Progress = Callable[[str], None]
# Settings that change a run's results: a run resumes only under the same values.
FINGERPRINT_SETTINGS = (
    "label_delay_batches",
    "drift_features",
    "drift_threshold",
    "drift_share_alarm",
    "drift_single_feature_alarm",
    "prediction_drift_threshold",
    "estimated_auc_drop_alarm",
    "realised_auc_drop_alarm",
    "calibration_gap_alarm",
    "quality_max_invalid_fraction",
    "seed",
    "cv_folds",
    "bootstrap_rounds",
    "gate_min_auc_gain",
    "gate_loss_tolerance",
    "gate_max_ece_increase",
)


class SimulationError(RuntimeError):
    """The simulation cannot start or continue as asked (nothing is half-written)."""


@dataclass(frozen=True)
class Stream:
    """The initial champion's training data and the production batches that follow it."""

    kind: Literal["natural", "exchangeable"]
    reference: pd.DataFrame
    batches: list[pd.DataFrame]
    data_hash: str


def natural_stream(settings: Settings) -> Stream:
    """The prepared timeline in time order: initial window, then every batch."""
    manifest = load_manifest(settings.prepared_dir)
    load = lambda name: load_window(settings.prepared_dir, manifest, name)  # noqa: E731
    batches = [load(name) for name in manifest.batch_names]
    return Stream("natural", load(INITIAL_WINDOW), batches, manifest.data_hash)


def exchangeable_stream(settings: Settings, n_batches: int, batch_rows: int) -> Stream:
    """The exchangeable control: no drift by construction.

    The initial window's patients are split in two: one half is the reference (train the
    initial model on it), batches are random draws from the other half. Any alarm on such a
    stream is a false alarm.
    """
    manifest = load_manifest(settings.prepared_dir)
    initial = load_window(settings.prepared_dir, manifest, INITIAL_WINDOW)
    reference, pool = _split_patients(initial, settings.seed)
    if batch_rows > len(pool):
        raise SimulationError(
            f"batches of {batch_rows:,} rows need a pool of more than {len(pool):,} rows"
        )
    rng = np.random.default_rng(settings.seed)
    batches = [
        pool.iloc[np.sort(rng.choice(len(pool), batch_rows, replace=False))].reset_index(drop=True)
        for _ in range(n_batches)
    ]
    return Stream("exchangeable", reference, batches, manifest.data_hash)


def _split_patients(frame: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two halves of ``frame`` with no patient in both."""
    splitter = GroupShuffleSplit(n_splits=1, test_size=0.5, random_state=seed)
    first, second = next(splitter.split(frame, groups=frame[PATIENT_KEY]))
    return frame.iloc[first].reset_index(drop=True), frame.iloc[second].reset_index(drop=True)


@dataclass(frozen=True)
class SimulationPlan:
    """Everything that defines a run."""

    run: str
    policy_name: str
    policy: Policy
    scenarios: ScenarioSet
    stream: Stream
    slot: ModelSlot


@dataclass
class _State:
    """What the loop carries from step to step (rebuilt from the store on resume)."""

    champion: str
    last_promotion_step: int | None
    next_step: int


@dataclass
class _StepRows:
    """Everything one step writes, committed together."""

    batch: dict[str, Any]
    features: list[dict[str, Any]] = field(default_factory=list)
    injections: list[dict[str, Any]] = field(default_factory=list)
    predictions: list[dict[str, Any]] = field(default_factory=list)
    performance: dict[str, Any] | None = None
    decision: dict[str, Any] = field(default_factory=dict)
    models: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class StepSummary:
    """One line of progress per step."""

    step: int
    text: str
    seconds: float


def fingerprint(plan: SimulationPlan, settings: Settings, initial_version: str) -> str:
    """Hash of everything that shapes a run's results: a run is resumed only if it matches."""
    payload = {
        "policy": plan.policy.model_dump(mode="json"),
        "scenarios": plan.scenarios.model_dump(mode="json"),
        "stream": plan.stream.kind,
        "data": plan.stream.data_hash,
        "batches": len(plan.stream.batches),
        "initial": initial_version,
        "slot": plan.slot.kind,
        "settings": {name: getattr(settings, name) for name in FINGERPRINT_SETTINGS},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class Simulation:
    """One run of the loop over a stream; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        plan: SimulationPlan,
        engine: Engine,
        progress: Progress | None = None,
    ):
        """Prepare the run's folder; nothing is written to the store until :meth:`run`."""
        self.settings = settings
        self.plan = plan
        self.engine = engine
        self.progress = progress or (lambda _line: None)
        self.folder = settings.simulation_dir / plan.run
        self._monitors: dict[str, DriftMonitor] = {}
        # Names this run's challengers; the creation time keeps a restarted run from reusing
        # the versions of the run it replaced.
        self._run_key = plan.run

    # --- the loop ---------------------------------------------------------------------------
    def run(self, max_steps: int | None = None) -> list[StepSummary]:
        """Run (or resume) the remaining steps; return a summary per step run now."""
        store.create_schema(self.engine)
        state = self._start_or_resume()
        last = len(self.plan.stream.batches)
        if max_steps is not None:
            last = min(last, state.next_step + max_steps - 1)
        summaries = []
        for step in range(state.next_step, last + 1):
            started = time.perf_counter()
            text = self._step(step, state)
            summary = StepSummary(step, text, time.perf_counter() - started)
            self.progress(f"{summary.text} ({summary.seconds:.1f} s)")
            summaries.append(summary)
        return summaries

    def _start_or_resume(self) -> _State:
        with self.engine.begin() as connection:
            row = (
                connection.execute(
                    select(store.simulation_runs).where(
                        store.simulation_runs.c.run == self.plan.run
                    )
                )
                .mappings()
                .first()
            )
        if row is None:
            return self._create_run()
        self._run_key = _run_key(self.plan.run, row["created_at"])
        if row["fingerprint"] != fingerprint(self.plan, self.settings, row["initial_version"]):
            raise SimulationError(
                f"run {self.plan.run!r} exists with a different configuration (policy, scenarios,"
                " data, thresholds or initial model): pick another --run-name or pass --restart"
            )
        return self._resumed_state(row["initial_version"])

    def _create_run(self) -> _State:
        initial = self.plan.slot.champion_version()
        _remove_outputs(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._save_reference(initial, self.plan.stream.reference)
        reference_auc = _tag_float(self.plan.slot.load(initial).tags.get("test_roc_auc"))
        now = datetime.now(UTC)
        self._run_key = _run_key(self.plan.run, now)
        run_row = {
            "run": self.plan.run,
            "policy": self.plan.policy_name,
            "policy_config": self.plan.policy.model_dump(mode="json"),
            "scenario_set": self.plan.scenarios.name,
            "scenarios": self.plan.scenarios.model_dump(mode="json"),
            "stream": self.plan.stream.kind,
            "slot": self.plan.slot.kind,
            "initial_version": initial,
            "reference_auc": reference_auc,
            "fingerprint": fingerprint(self.plan, self.settings, initial),
            "created_at": now,
            "updated_at": now,
        }
        model_row = self._model_row(initial, 0, self.plan.stream.reference, "initial", None)
        with self.engine.begin() as connection:
            connection.execute(insert(store.simulation_runs), [run_row])
            connection.execute(insert(store.simulation_models), [model_row])
        return _State(initial, None, 1)

    def _resumed_state(self, initial: str) -> _State:
        run = self.plan.run
        batches, decisions = store.simulation_batches, store.simulation_decisions
        with self.engine.begin() as connection:
            last = connection.execute(
                select(batches.c.batch, batches.c.champion_after)
                .where(batches.c.run == run)
                .order_by(batches.c.batch.desc())
            ).first()
            promotion = connection.execute(
                select(decisions.c.step)
                .where(decisions.c.run == run, decisions.c.outcome == "promoted")
                .order_by(decisions.c.step.desc())
            ).first()
        champion = last.champion_after if last else initial
        serving = self.plan.slot.champion_version()
        if serving != champion:
            # A step killed after its promotion but before its commit: undo, then redo it.
            logger.warning("champion is v%s but the last committed step left v%s: restoring",
                           serving, champion)  # fmt: skip
            self.plan.slot.set_champion(champion, None)
        next_step = (last.batch + 1) if last else 1
        if last:
            self.progress(f"resuming run {run!r} at batch {next_step} (champion v{champion})")
        return _State(champion, promotion.step if promotion else None, next_step)

    def _step(self, step: int, state: _State) -> str:
        frame, injections = inject(
            self.plan.stream.batches[step - 1], self.plan.scenarios, step, self.settings.seed
        )
        quality = check_batch(frame, self.settings.quality_max_invalid_fraction)
        rows = _StepRows(batch={}, injections=[self._injection_row(i) for i in injections])
        scored_by = None if quality.quarantined else state.champion
        if quality.quarantined:
            self._quarantine(step, frame, quality.quarantine_reason or "", None)
            rows.batch = self._quarantined_row(step, frame, quality, injections)
            text = f"batch {step}: quarantined ({quality.quarantine_reason})"
        else:
            text = self._score_and_monitor(step, frame, quality, injections, state, rows)
        text += self._labels_and_policy(step, state, rows)
        rows.batch["model_version"] = scored_by
        rows.batch["champion_after"] = state.champion
        self._commit(step, rows)
        return text

    # --- scoring and label-free monitors ------------------------------------------------------
    def _score_and_monitor(
        self,
        step: int,
        frame: pd.DataFrame,
        quality: QualityResult,
        injections: list[Injection],
        state: _State,
        rows: _StepRows,
    ) -> str:
        if quality.n_invalid:
            reason = "rows breaking the contract"
            self._quarantine(step, frame[quality.invalid_rows], reason, "rows")
            frame = frame[~quality.invalid_rows].reset_index(drop=True)
        model = self.plan.slot.load(state.champion)
        probabilities, rows.predictions = self._score(step, model, frame)
        frame = frame.assign(**{PREDICTED: probabilities})
        _write_parquet(frame, self.folder / "batches" / f"{batch_name(step)}.parquet")
        started = time.perf_counter()
        monitor = self._monitor_for(state.champion, probabilities, step, rows)
        html = self.folder / "reports" / f"{batch_name(step)}.html"
        drift = monitor.run(frame, probabilities, html)
        estimate = estimated_auc(probabilities)
        alarms = self._label_free_alarms(drift, estimate, state.champion)
        seconds = time.perf_counter() - started
        rows.batch = self._batch_row(step, frame, quality, injections, drift, estimate, alarms)
        rows.batch["monitor_seconds"] = seconds
        rows.features = [{"run": self.plan.run, "batch": step, **asdict(f)} for f in drift.features]
        flagged = ", ".join(drift.drifted_features[:3]) or "none"
        return (
            f"batch {step}: scored {len(frame):,} rows with v{state.champion}; drift share "
            f"{drift.drift_share:.2f} ({flagged}); estimated AUC {estimate:.3f}"
            + (f"; alarms: {'; '.join(alarms)}" if alarms else "")
        )

    def _score(
        self, step: int, model: LoadedModel, frame: pd.DataFrame
    ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Score through the service's path (fast path when proven), log like the service."""
        encounters = _records(frame)
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

    def _monitor_for(
        self, version: str, probabilities: np.ndarray, step: int, rows: _StepRows
    ) -> DriftMonitor:
        """The drift monitor of ``version``; its first batch becomes its baseline if it has none."""
        if version not in self._monitors:
            baseline_path = self.folder / "references" / f"v{version}_baseline.parquet"
            if not baseline_path.is_file():
                _write_parquet(pd.DataFrame({PREDICTED: probabilities}), baseline_path)
                rows.models.append({"version": version, "baseline": estimated_auc(probabilities)})
            reference = pd.read_parquet(self.folder / "references" / f"v{version}.parquet")
            baseline = pd.read_parquet(baseline_path)[PREDICTED].to_numpy()
            importance = field_importance(self.plan.slot.load(version))
            self._monitors[version] = DriftMonitor(
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
        return self._monitors[version]

    def _label_free_alarms(self, drift: DriftResult, estimate: float, version: str) -> list[str]:
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
        baseline = self._baseline_auc(version)
        if baseline is not None and estimate < baseline - self.settings.estimated_auc_drop_alarm:
            alarms.append(f"estimated_performance: AUC {estimate:.3f} vs {baseline:.3f} baseline")
        return alarms

    def _baseline_auc(self, version: str) -> float | None:
        path = self.folder / "references" / f"v{version}_baseline.parquet"
        if not path.is_file():
            return None
        return estimated_auc(pd.read_parquet(path)[PREDICTED].to_numpy())

    # --- labels, policy, retraining ---------------------------------------------------------
    def _labels_and_policy(self, step: int, state: _State, rows: _StepRows) -> str:
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
            rows.performance = self._performance_row(labelled, step, performance, label_alarms)
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
        rows.decision = self._decision_row(
            step, labelled if usable else None, decision, outcome, champion_before, challenger,
            gate, error,
        )  # fmt: skip
        return text

    def _was_scored(self, batch: int, step: int, rows: _StepRows) -> bool:
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

    def _stored_alarms(self, batch: int, step: int, rows: _StepRows) -> list[str]:
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
        self, step: int, labelled: int, state: _State, rows: _StepRows
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
                baseline = slot.load(challenger).score(_records(holdout), "none").probabilities
                _write_parquet(
                    pd.DataFrame({PREDICTED: baseline}),
                    self.folder / "references" / f"v{challenger}_baseline.parquet",
                )
                slot.set_champion(challenger, state.champion)
                state.champion = challenger
                baseline_auc: float | None = estimated_auc(baseline)
            else:
                baseline_auc = None
            window = f"initial + batches 1-{labelled} ({self.plan.policy.window})"
            rows.models.append(self._model_row(challenger, step, train, window, baseline_auc))
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
        train_part, holdout = _split_patients(latest, self.settings.seed + labelled)
        train = pd.concat([*frames, train_part], ignore_index=True)
        if self.plan.policy.window == "sliding":
            size = self.plan.policy.window_rows or len(self.plan.stream.reference)
            train = train.tail(size).reset_index(drop=True)
        return train, holdout

    def _gate(
        self, holdout: pd.DataFrame, labelled: int, champion: str, challenger: str
    ) -> GateDecision:
        slot, records = self.plan.slot, _records(holdout)
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

    # --- files and rows ---------------------------------------------------------------------
    def _save_reference(self, version: str, train: pd.DataFrame) -> None:
        sample = train.sample(min(len(train), self.settings.reference_rows), random_state=0)
        _write_parquet(
            features_of(sample).reset_index(drop=True),
            self.folder / "references" / f"v{version}.parquet",
        )

    def _quarantine(self, step: int, frame: pd.DataFrame, reason: str, suffix: str | None) -> None:
        name = batch_name(step) + (f"_{suffix}" if suffix else "")
        path = self.folder / "quarantine" / f"{name}.parquet"
        _write_parquet(frame.assign(quarantine_reason=reason), path)

    def _injection_row(self, injection: Injection) -> dict[str, Any]:
        return {"run": self.plan.run, **asdict(injection)}

    def _quarantined_row(
        self, step: int, frame: pd.DataFrame, quality: QualityResult, injections: list[Injection]
    ) -> dict[str, Any]:
        return {
            **self._common_batch_row(step, injections),
            "status": "quarantined",
            "n_rows": len(frame),
            "n_set_aside": len(frame),
            "quarantine_reason": quality.quarantine_reason,
            "alarms": [f"quality: {quality.quarantine_reason}"],
        }

    def _batch_row(
        self,
        step: int,
        frame: pd.DataFrame,
        quality: QualityResult,
        injections: list[Injection],
        drift: DriftResult,
        estimate: float,
        alarms: list[str],
    ) -> dict[str, Any]:
        risks = frame[PREDICTED].to_numpy()
        quantiles = dict(zip([f"q{round(q * 100):02d}" for q in QUANTILES],
                             np.quantile(risks, QUANTILES).tolist(), strict=True))  # fmt: skip
        return {
            **self._common_batch_row(step, injections),
            "status": "completed",
            "n_rows": len(frame),
            "n_set_aside": quality.n_invalid,
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
            "run": self.plan.run,
            "batch": step,
            "batch_name": batch_name(step),
            "scenarios": ", ".join(i.scenario for i in injections),
            "finished_at": datetime.now(UTC),
        }

    def _performance_row(
        self, batch: int, step: int, performance: RealisedPerformance, alarms: list[str]
    ) -> dict[str, Any]:
        with self.engine.begin() as connection:
            version = connection.execute(
                select(store.simulation_batches.c.model_version).where(
                    store.simulation_batches.c.run == self.plan.run,
                    store.simulation_batches.c.batch == batch,
                )
            ).scalar()
        auc, shortfall = performance.roc_auc, performance.auc_shortfall
        gap = performance.calibration_gap
        return {
            "run": self.plan.run,
            "batch": batch,
            "known_at_step": step,
            "model_version": version or "",
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

    def _decision_row(
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
        return {
            "run": self.plan.run,
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

    def _model_row(
        self, version: str, step: int, train: pd.DataFrame, batches: str, baseline: float | None
    ) -> dict[str, Any]:
        return {
            "run": self.plan.run,
            "version": version,
            "trained_at_step": step,
            "training_rows": len(train),
            "training_batches": batches,
            "baseline_estimated_auc": baseline,
            "created_at": datetime.now(UTC),
        }

    def _commit(self, step: int, rows: _StepRows) -> None:
        """Replace everything this step wrote before (a re-run) and write it, atomically."""
        run = self.plan.run
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
            self._upsert_models(connection, rows.models)
            connection.execute(insert(store.simulation_batches), [rows.batch])
            for table, values in (
                (store.feature_drift, rows.features),
                (store.scenario_injections, rows.injections),
                (store.predictions, rows.predictions),
            ):
                if values:
                    connection.execute(insert(table), values)
            connection.execute(insert(decisions), [rows.decision])
            connection.execute(
                store.simulation_runs.update()
                .where(store.simulation_runs.c.run == run)
                .values(updated_at=datetime.now(UTC))
            )

    def _upsert_models(self, connection: Any, models: list[dict[str, Any]]) -> None:
        table = store.simulation_models
        for model in models:
            key = (table.c.run == self.plan.run) & (table.c.version == model["version"])
            if "baseline" in model and len(model) == 2:
                connection.execute(
                    table.update().where(key).values(baseline_estimated_auc=model["baseline"])
                )
                continue
            connection.execute(delete(table).where(key))
            connection.execute(insert(table), [model])


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


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    features = features_of(frame)
    return features.astype(object).where(features.notna(), None).to_dict("records")  # type: ignore[return-value]


def _bands(probabilities: np.ndarray, settings: Settings) -> list[str]:
    from healthpredict.serving.scoring import risk_bands

    return risk_bands(probabilities, settings)


def _run_key(run: str, created_at: datetime) -> str:
    return f"{run}@{created_at:%Y%m%dT%H%M%S}"


RUN_OUTPUTS = ("batches", "quarantine", "references", "reports")


def _remove_outputs(folder: Path) -> None:
    """Delete what a run wrote beside its models (a folder slot's versions stay)."""
    for name in RUN_OUTPUTS:
        shutil.rmtree(folder / name, ignore_errors=True)


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Write via a temporary file so a killed step never leaves a truncated file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    frame.to_parquet(temporary, index=False)
    temporary.replace(path)


def _tag_float(text: str | None) -> float | None:
    try:
        return float(text.split()[0]) if text else None
    except ValueError:
        return None


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


# --- entry points -----------------------------------------------------------------------------
StreamKind = Literal["natural", "exchangeable"]
WHAT_IF_SUFFIX = "-what-if"


def default_run_name(scenario_set: str, policy: str, stream: StreamKind, what_if: bool) -> str:
    """``<scenario set>-<policy>``, marked as control or what-if where it applies."""
    prefix = "control" if stream == "exchangeable" else scenario_set
    return f"{prefix}-{policy}" + (WHAT_IF_SUFFIX if what_if else "")


def build_plan(
    settings: Settings,
    policy_name: str,
    run: str | None = None,
    stream_kind: StreamKind = "natural",
    what_if: bool = False,
    scenarios: ScenarioSet | None = None,
    exchangeable_batches: int = 20,
) -> SimulationPlan:
    """Assemble a run: policy and scenarios from their files, the stream, the model slot.

    The exchangeable control and what-if runs keep versions in a folder; the main run uses the
    registry. A folder slot starts from the registry's champion (natural stream) or from a
    model trained on the control's reference half (exchangeable stream).
    """
    from healthpredict.monitoring.policy import load_policies, select_policy
    from healthpredict.monitoring.scenarios import load_scenarios
    from healthpredict.pipelines.model_slots import RegistrySlot

    policy = select_policy(load_policies(settings.policies_file), policy_name)
    scenario_set = scenarios or load_scenarios(settings.scenarios_file)
    if stream_kind == "exchangeable":
        batch_rows = _natural_batch_rows(settings)
        stream = exchangeable_stream(settings, exchangeable_batches, batch_rows)
    else:
        stream = natural_stream(settings)
    name = run or default_run_name(scenario_set.name, policy_name, stream_kind, what_if)
    if stream_kind == "natural" and not what_if:
        return SimulationPlan(
            name, policy_name, policy, scenario_set, stream, RegistrySlot(settings)
        )
    slot = FolderSlot(settings.simulation_dir / name / "models", settings.model_name)
    if stream_kind == "exchangeable":
        _seed_with_fitted(slot, stream, settings)
    else:
        _seed_from_registry(slot, settings)
    return SimulationPlan(name, policy_name, policy, scenario_set, stream, slot)


def _natural_batch_rows(settings: Settings) -> int:
    manifest = load_manifest(settings.prepared_dir)
    return manifest.window(manifest.batch_names[0]).rows


def _seed_with_fitted(slot: FolderSlot, stream: Stream, settings: Settings) -> None:
    from healthpredict.modeling.train import default_params

    if not slot.has_champion():
        params = default_params()
        fitted = fit_model(
            ModelKind.LIGHTGBM, stream.reference, params, settings.cv_folds, settings.seed
        )
        slot.seed(fitted.pipeline, params, {"training_window": "control reference half"})


def _seed_from_registry(slot: FolderSlot, settings: Settings) -> None:
    from healthpredict.pipelines.model_slots import RegistrySlot

    if not slot.has_champion():
        registry = RegistrySlot(settings)
        champion = registry.champion_version()
        loaded = registry.load(champion)
        tags = {**loaded.tags, "copied_from": f"{settings.model_name} v{champion}"}
        slot.seed(loaded.pipeline, registry.params(champion), tags)


def simulate(
    settings: Settings,
    plan: SimulationPlan,
    restart: bool = False,
    max_batches: int | None = None,
    progress: Progress | None = None,
) -> RunHistory:
    """Run or resume ``plan``; return its whole recorded history."""
    from healthpredict.monitoring.history import read_history

    engine = store.make_engine(settings.monitoring_url)
    try:
        if restart:
            forget_run(engine, settings, plan.run)
            if isinstance(plan.slot, FolderSlot):
                plan.slot.reset()
        Simulation(settings, plan, engine, progress).run(max_batches)
        return read_history(engine, plan.run)
    finally:
        engine.dispose()


def forget_run(engine: Engine, settings: Settings, run: str) -> None:
    """Delete a run's rows and files (model versions in the registry are kept, as history)."""
    store.create_schema(engine)
    with engine.begin() as connection:
        for table in (
            store.simulation_runs,
            store.simulation_batches,
            store.feature_drift,
            store.batch_performance,
            store.simulation_decisions,
            store.simulation_models,
            store.scenario_injections,
        ):
            connection.execute(delete(table).where(table.c.run == run))
        connection.execute(
            delete(store.predictions).where(
                store.predictions.c.request_id.like(f"simulation:{run}:%")
            )
        )
    _remove_outputs(settings.simulation_dir / run)
