"""How a simulation run starts or resumes: its configuration fingerprint and the loop's state.

A new run records its configuration and initial champion; an existing one is resumed only
under the same configuration (the fingerprint), at the first uncommitted batch, with the
champion the last committed step left. If the registry's champion differs from that one, the
loop either puts it back (it owns the champion role, and an uncommitted step of its own moved
it) or, under an orchestrator whose delivery pipeline moves the alias, adopts it.

:class:`RunState` is a base class of :class:`~healthpredict.pipelines.simulate.Simulation`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, insert, select

from healthpredict.monitoring import store
from healthpredict.pipelines.simulation_rows import StepRecorder, save_reference
from healthpredict.pipelines.streams import SimulationError
from healthpredict.settings import Settings

if TYPE_CHECKING:  # the loop imports this module; these are only annotations here
    from healthpredict.pipelines.simulate import SimulationPlan

logger = logging.getLogger(__name__)
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


@dataclass
class LoopState:
    """What the loop carries from step to step (rebuilt from the store on resume).

    ``adopted`` says the champion changed outside the loop since the last committed step;
    ``confirms`` is the step whose passed challenger that champion is, if any.
    """

    champion: str
    last_promotion_step: int | None
    next_step: int
    adopted: bool = False
    confirms: int | None = None


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


class RunState:
    """Start or resume a run (a base class of ``Simulation``)."""

    settings: Settings
    plan: SimulationPlan
    engine: Engine
    folder: Path
    recorder: StepRecorder
    progress: Callable[[str], None]
    orchestrated: bool
    _state: LoopState | None
    _run_key: str

    def _started(self) -> LoopState:
        """The loop's state: the run created, or resumed from the store (once per object)."""
        if self._state is None:
            store.create_schema(self.engine)
            self._state = self._start_or_resume()
        return self._state

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
        remove_outputs(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        save_reference(self.folder, initial, self.plan.stream.reference, self.settings)
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
        state = LoopState(champion, promotion.step if promotion else None, 1)
        state.next_step = (last.batch + 1) if last else 1
        serving = self.plan.slot.champion_version()
        if serving != champion and self.orchestrated:
            self._adopt_champion(state, serving)
        elif serving != champion:
            # A step killed after its promotion but before its commit: undo, then redo it.
            logger.warning("champion is v%s but the last committed step left v%s: restoring",
                           serving, champion)  # fmt: skip
            self.plan.slot.set_champion(champion, None)
        if last:
            self.progress(
                f"resuming run {run!r} at batch {state.next_step} (champion v{state.champion})"
            )
        return state

    def _adopt_champion(self, state: LoopState, serving: str) -> None:
        """The champion changed outside the loop: a delivery of a passed challenger, a rollback."""
        decisions = store.simulation_decisions
        with self.engine.begin() as connection:
            passed = connection.execute(
                select(decisions.c.step)
                .where(
                    decisions.c.run == self.plan.run,
                    decisions.c.outcome == "passed",
                    decisions.c.challenger_version == serving,
                )
                .order_by(decisions.c.step.desc())
            ).first()
        logger.info("champion is now v%s (was v%s): adopted", serving, state.champion)
        state.champion, state.adopted = serving, True
        if passed is not None:
            state.confirms = state.last_promotion_step = passed.step


def _run_key(run: str, created_at: datetime) -> str:
    return f"{run}@{created_at:%Y%m%dT%H%M%S}"


RUN_OUTPUTS = ("batches", "pending", "quarantine", "references", "reports")


def remove_outputs(folder: Path) -> None:
    """Delete what a run wrote beside its models (a folder slot's versions stay)."""
    for name in RUN_OUTPUTS:
        shutil.rmtree(folder / name, ignore_errors=True)


def _tag_float(text: str | None) -> float | None:
    try:
        return float(text.split()[0]) if text else None
    except ValueError:
        return None
