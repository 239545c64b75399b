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
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from sqlalchemy import Engine, delete, insert, select

from healthpredict.data.pseudonym import ENCOUNTER_KEY, PATIENT_KEY
from healthpredict.data.timeline import batch_name, load_manifest
from healthpredict.modeling.train import ModelKind, fit_model
from healthpredict.monitoring import store
from healthpredict.monitoring.drift import (
    DriftMonitor,
    DriftResult,
    DriftThresholds,
    monitored_fields,
)
from healthpredict.monitoring.history import RunHistory
from healthpredict.monitoring.performance import estimated_auc
from healthpredict.monitoring.policy import Policy
from healthpredict.monitoring.quality import QualityResult, check_batch
from healthpredict.monitoring.scenarios import Injection, ScenarioSet, inject
from healthpredict.pipelines.model_slots import FolderSlot, ModelSlot
from healthpredict.pipelines.simulation_retrain import LabelsAndRetraining
from healthpredict.pipelines.simulation_rows import (
    PREDICTED,
    StepRecorder,
    StepRows,
    encounter_records,
    write_parquet,
)
from healthpredict.pipelines.streams import (
    SimulationError,
    Stream,
    exchangeable_stream,
    natural_stream,
)
from healthpredict.serving.model_store import LoadedModel
from healthpredict.settings import Settings

# The simulation's public names; some are defined in streams.py, simulation_rows.py or
# monitoring.history and re-exported here, where callers have always found them.
__all__ = [
    "PREDICTED",
    "RunHistory",
    "Simulation",
    "SimulationError",
    "SimulationPlan",
    "Stream",
    "build_plan",
    "default_run_name",
    "exchangeable_stream",
    "field_importance",
    "forget_run",
    "natural_stream",
    "simulate",
]

logger = logging.getLogger(__name__)
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
class LoopState:
    """What the loop carries from step to step (rebuilt from the store on resume)."""

    champion: str
    last_promotion_step: int | None
    next_step: int


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


class Simulation(LabelsAndRetraining):
    """One run of the loop over a stream; see the module docstring.

    Scoring and the label-free monitors are here; what happens once labels arrive (policy,
    retrain, gate) is in :class:`~healthpredict.pipelines.simulation_retrain.LabelsAndRetraining`.
    """

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
        self.recorder = StepRecorder(engine, plan.run)
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

    def _start_or_resume(self) -> LoopState:
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

    def _create_run(self) -> LoopState:
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
        model_row = self.recorder.model_row(initial, 0, self.plan.stream.reference, "initial", None)
        with self.engine.begin() as connection:
            connection.execute(insert(store.simulation_runs), [run_row])
            connection.execute(insert(store.simulation_models), [model_row])
        return LoopState(initial, None, 1)

    def _resumed_state(self, initial: str) -> LoopState:
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
        return LoopState(champion, promotion.step if promotion else None, next_step)

    def _step(self, step: int, state: LoopState) -> str:
        frame, injections = inject(
            self.plan.stream.batches[step - 1], self.plan.scenarios, step, self.settings.seed
        )
        quality = check_batch(frame, self.settings.quality_max_invalid_fraction)
        rows = StepRows(batch={}, injections=[self.recorder.injection_row(i) for i in injections])
        scored_by = None if quality.quarantined else state.champion
        if quality.quarantined:
            self._quarantine(step, frame, quality.quarantine_reason or "", None)
            rows.batch = self.recorder.quarantined_row(step, frame, quality, injections)
            text = f"batch {step}: quarantined ({quality.quarantine_reason})"
        else:
            text = self._score_and_monitor(step, frame, quality, injections, state, rows)
        text += self._labels_and_policy(step, state, rows)
        rows.batch["model_version"] = scored_by
        rows.batch["champion_after"] = state.champion
        self.recorder.commit(step, rows)
        return text

    # --- scoring and label-free monitors ------------------------------------------------------
    def _score_and_monitor(
        self,
        step: int,
        frame: pd.DataFrame,
        quality: QualityResult,
        injections: list[Injection],
        state: LoopState,
        rows: StepRows,
    ) -> str:
        if quality.n_invalid:
            reason = "rows breaking the contract"
            self._quarantine(step, frame[quality.invalid_rows], reason, "rows")
            frame = frame[~quality.invalid_rows].reset_index(drop=True)
        model = self.plan.slot.load(state.champion)
        probabilities, rows.predictions = self._score(step, model, frame)
        frame = frame.assign(**{PREDICTED: probabilities})
        write_parquet(frame, self.folder / "batches" / f"{batch_name(step)}.parquet")
        started = time.perf_counter()
        monitor = self._monitor_for(state.champion, probabilities, step, rows)
        html = self.folder / "reports" / f"{batch_name(step)}.html"
        drift = monitor.run(frame, probabilities, html)
        estimate = estimated_auc(probabilities)
        alarms = self._label_free_alarms(drift, estimate, state.champion)
        seconds = time.perf_counter() - started
        rows.batch = self.recorder.batch_row(
            step, frame, quality, injections, drift, estimate, alarms
        )
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

    def _monitor_for(
        self, version: str, probabilities: np.ndarray, step: int, rows: StepRows
    ) -> DriftMonitor:
        """The drift monitor of ``version``; its first batch becomes its baseline if it has none."""
        if version not in self._monitors:
            baseline_path = self.folder / "references" / f"v{version}_baseline.parquet"
            if not baseline_path.is_file():
                write_parquet(pd.DataFrame({PREDICTED: probabilities}), baseline_path)
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


def _run_key(run: str, created_at: datetime) -> str:
    return f"{run}@{created_at:%Y%m%dT%H%M%S}"


RUN_OUTPUTS = ("batches", "quarantine", "references", "reports")


def _remove_outputs(folder: Path) -> None:
    """Delete what a run wrote beside its models (a folder slot's versions stay)."""
    for name in RUN_OUTPUTS:
        shutil.rmtree(folder / name, ignore_errors=True)


def _tag_float(text: str | None) -> float | None:
    try:
        return float(text.split()[0]) if text else None
    except ValueError:
        return None


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
