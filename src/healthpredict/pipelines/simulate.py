"""Flow: replay production batches over simulated time, monitor, retrain, gate, record.

Each step handles one batch, in phases that can also run as separate tasks (the monitoring
DAG runs one task per phase):

1. **score** (:meth:`Simulation.score_pending`): inject the scenarios active on the batch,
   check its quality (quarantine), score it with the champion through the service's scoring
   code;
2. **monitor**: data and prediction drift, the label-free performance estimate and alarms;
3. **decide**: learn the labels of the batch that has waited ``label_delay_batches`` steps and
   let the policy decide (1-3 together: :meth:`Simulation.observe`);
4. **retrain** (:meth:`Simulation.retrain_pending`) when the policy says so;
5. **gate** (:meth:`Simulation.gate_pending`): promote the challenger if it wins, or, with
   ``promote=False``, only record the verdict for a delivery pipeline to act on;
6. **commit** (:meth:`Simulation.commit_pending`): everything the step produced, written to
   the store in one database transaction.

Between phases the step lives in a pending record in the run folder
(:mod:`~healthpredict.pipelines.simulation_pending`), so each phase can be retried on its own
and a committed step run again changes nothing. A killed run resumes at the first uncommitted
batch, and re-committing a batch replaces its rows instead of adding to them. Model versions
are the one side effect outside the transaction: a resumed step finds the challenger it
registered before (by run and step) instead of training another. When the loop owns the
champion role (the ``simulate`` command), a champion alias moved by an uncommitted step is put
back before the step runs again; under an orchestrator (``orchestrated=True``) the delivery
pipeline moves the alias after a verified rollout, and the next step adopts the new champion.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Engine, delete, select

from healthpredict.data.timeline import load_manifest
from healthpredict.modeling.train import ModelKind, fit_model
from healthpredict.monitoring import store
from healthpredict.monitoring.drift import DriftMonitor
from healthpredict.monitoring.history import RunHistory
from healthpredict.monitoring.policy import Decision, Policy
from healthpredict.monitoring.scenarios import ScenarioSet
from healthpredict.pipelines.model_slots import FolderSlot, ModelSlot
from healthpredict.pipelines.simulation_pending import (
    PHASES,
    PendingStep,
    Phase,
    drop_predictions,
    load_pending,
    save_pending,
)
from healthpredict.pipelines.simulation_retrain import LabelsAndRetraining
from healthpredict.pipelines.simulation_rows import PREDICTED, StepRecorder, StepRows
from healthpredict.pipelines.simulation_scoring import ScoringAndMonitors, field_importance
from healthpredict.pipelines.simulation_state import LoopState, RunState, remove_outputs
from healthpredict.pipelines.streams import (
    SimulationError,
    Stream,
    exchangeable_stream,
    natural_stream,
)
from healthpredict.settings import Settings

# The simulation's public names; some are defined in streams.py, simulation_rows.py,
# simulation_scoring.py or monitoring.history and re-exported here, where callers have
# always found them.
__all__ = [
    "PREDICTED",
    "PendingStep",
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


@dataclass(frozen=True)
class SimulationPlan:
    """Everything that defines a run."""

    run: str
    policy_name: str
    policy: Policy
    scenarios: ScenarioSet
    stream: Stream
    slot: ModelSlot


@dataclass(frozen=True)
class StepSummary:
    """One line of progress per step."""

    step: int
    text: str
    seconds: float


class Simulation(RunState, ScoringAndMonitors, LabelsAndRetraining):
    """One run of the loop over a stream; see the module docstring.

    The phases' work is in :class:`~healthpredict.pipelines.simulation_scoring.ScoringAndMonitors`
    (score, monitor) and :class:`~healthpredict.pipelines.simulation_retrain.LabelsAndRetraining`
    (decide, retrain, gate); this class runs them in order, keeps the pending record between
    them, and commits.
    """

    def __init__(
        self,
        settings: Settings,
        plan: SimulationPlan,
        engine: Engine,
        progress: Progress | None = None,
        orchestrated: bool = False,
    ):
        """Prepare the run's folder; nothing is written to the store until a step is scored.

        Args:
            settings: Settings in force.
            plan: The run.
            engine: The monitoring store.
            progress: Called with one line per step.
            orchestrated: The phases run as an orchestrator's tasks and a delivery pipeline
                owns the champion alias: a champion changed outside the loop is adopted (not
                put back), the gate promotes nothing unless told to, and an unreachable
                tracking server fails the phase (the orchestrator retries) instead of being
                recorded as a failed retrain.
        """
        self.settings = settings
        self.plan = plan
        self.engine = engine
        self.progress = progress or (lambda _line: None)
        self.orchestrated = orchestrated
        self.folder = settings.simulation_dir / plan.run
        self.recorder = StepRecorder(engine, plan.run)
        self._monitors: dict[str, tuple[DriftMonitor, float]] = {}
        self._state: LoopState | None = None
        self._pending: dict[int, PendingStep] = {}
        # Names this run's challengers; the creation time keeps a restarted run from reusing
        # the versions of the run it replaced.
        self._run_key = plan.run

    # --- the loop ---------------------------------------------------------------------------
    def run(self, max_steps: int | None = None) -> list[StepSummary]:
        """Run (or resume) the remaining steps; return a summary per step run now."""
        state = self._started()
        last = len(self.plan.stream.batches)
        if max_steps is not None:
            last = min(last, state.next_step + max_steps - 1)
        summaries = []
        for step in range(state.next_step, last + 1):
            started = time.perf_counter()
            text = self._step(step)
            summary = StepSummary(step, text, time.perf_counter() - started)
            self.progress(f"{summary.text} ({summary.seconds:.1f} s)")
            summaries.append(summary)
        return summaries

    def _step(self, step: int) -> str:
        self.observe(step)
        self.retrain_pending(step)
        self.gate_pending(step)
        return self.commit_pending(step).text

    # --- the phases -------------------------------------------------------------------------
    def observe(self, step: int) -> PendingStep:
        """Score, monitor and decide: everything up to the policy's decision."""
        self.score_pending(step)
        self.monitor_pending(step)
        return self.decide_pending(step)

    def score_pending(self, step: int) -> PendingStep:
        """Score batch ``step`` with the champion; start its pending record.

        A committed step is not scored again: its (committed) record is returned.

        Raises:
            SimulationError: No such batch, or an earlier batch is not committed yet.
        """
        state = self._started()
        batches = len(self.plan.stream.batches)
        if not 1 <= step <= batches:
            raise SimulationError(f"there is no batch {step}: the stream has {batches}")
        if step < state.next_step:
            return self._committed(step)
        if step > state.next_step:
            raise SimulationError(
                f"batch {step} cannot run before batch {state.next_step} is committed: "
                "batches run in order"
            )
        pending = self._score_step(step, state)
        self._keep(pending, predictions=True)
        return pending

    def monitor_pending(self, step: int) -> PendingStep:
        """Drift, estimate and label-free alarms of the scored batch."""
        return self._advance(step, "monitored", self._monitor_step)

    def decide_pending(self, step: int) -> PendingStep:
        """Labels that arrived at this step, and the policy's decision."""
        return self._advance(step, "decided", self._decide_step)

    def retrain_pending(self, step: int) -> PendingStep:
        """Train the challenger if the policy said so (``.challenger``; None otherwise)."""
        return self._advance(step, "retrained", self._train_step)

    def gate_pending(self, step: int, promote: bool | None = None) -> PendingStep:
        """Gate the challenger (``.outcome``, ``.gate``).

        Args:
            step: The step.
            promote: Move the champion role when the challenger wins; otherwise record the
                verdict only (outcome "passed"). Default: unless ``orchestrated``.
        """
        moves = not self.orchestrated if promote is None else promote
        return self._advance(step, "gated", lambda pending: self._gate_step(pending, moves))

    def commit_pending(self, step: int) -> PendingStep:
        """Write the step's rows to the store in one transaction (replacing any earlier ones)."""
        pending = self._advance(step, "committed", self._commit_step)
        drop_predictions(self.folder, step)
        self._pending.pop(step, None)
        state = self._state
        if state is not None and state.next_step == step:
            state.champion, state.next_step = pending.champion_after, step + 1
            state.adopted, state.confirms = False, None
            if pending.outcome == "promoted":
                state.last_promotion_step = step
        return pending

    def _commit_step(self, pending: PendingStep) -> None:
        rows = pending.rows
        if pending.action == "retrain":
            version = f" v{pending.challenger}" if pending.challenger else ""
            pending.text += f"; retrain -> {pending.outcome}{version}"
        decision = Decision(pending.action, tuple(pending.reasons))  # type: ignore[arg-type]
        rows.decision = self.recorder.decision_row(
            pending.step, pending.labelled, decision, pending.outcome, pending.champion,
            pending.challenger, pending.gate, pending.error,
        )  # fmt: skip
        rows.batch["model_version"] = pending.champion if pending.scored else None
        rows.batch["champion_after"] = pending.champion_after
        rows.promoted_step = pending.confirms
        self.recorder.commit(pending.step, rows)

    def _advance(self, step: int, phase: Phase, work: Callable[[PendingStep], None]) -> PendingStep:
        """Run one phase on the step's pending record unless it ran already; keep the result."""
        self._started()
        pending = self._pending.get(step) or load_pending(self.folder, step)
        if pending is None:
            raise SimulationError(f"batch {step} has not been scored: score it first")
        if pending.reached(phase):
            return pending
        previous = PHASES[PHASES.index(phase) - 1]
        if pending.action != "retrain" and previous in ("retrained", "gated"):
            previous = "decided"  # nothing to retrain or gate: those phases may be skipped
        if not pending.reached(previous):
            raise SimulationError(f"batch {step} is {pending.phase}, not yet {previous}")
        try:
            work(pending)
        except BaseException:
            self._pending.pop(step, None)  # half-changed: a retry reads the record again
            raise
        pending.phase = phase
        self._keep(pending)
        return pending

    def _keep(self, pending: PendingStep, predictions: bool = False) -> None:
        self._pending[pending.step] = pending
        save_pending(self.folder, pending, predictions)

    def _committed(self, step: int) -> PendingStep:
        """The record of a committed step, rebuilt from the store if the folder lost it."""
        pending = self._pending.get(step) or load_pending(self.folder, step)
        if pending is None or not pending.reached("committed"):
            pending = self._from_store(step)
            self._keep(pending)
        return pending

    def _from_store(self, step: int) -> PendingStep:
        batches, decisions = store.simulation_batches, store.simulation_decisions
        with self.engine.begin() as connection:
            batch = (
                connection.execute(
                    select(batches).where(batches.c.run == self.plan.run, batches.c.batch == step)
                )
                .mappings()
                .one()
            )
            decision = (
                connection.execute(
                    select(decisions).where(
                        decisions.c.run == self.plan.run, decisions.c.step == step
                    )
                )
                .mappings()
                .one()
            )
        return PendingStep(
            step, "committed", batch["model_version"] or batch["champion_after"], None,
            StepRows(batch={"status": batch["status"]}), f"batch {step}: committed before",
            decision["labelled_batch"], decision["action"], list(decision["reasons"]),
            decision["challenger_version"], decision["outcome"], decision["gate"],
            decision["error"], batch["champion_after"],
        )  # fmt: skip


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
    remove_outputs(settings.simulation_dir / run)
