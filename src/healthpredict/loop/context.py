"""The explicit context every phase of the loop receives, and the deployment's record in the store.

A :class:`LoopContext` names everything a phase may use: settings, the store, the deployment
whose log it reads, the window clock, the policy, where model versions live (the registry or
a what-if run's folder), the initial training data and whether the loop may move the champion
alias itself. Phases keep no state of their own between calls: whatever carries from one
window to the next is read from the store.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Engine, insert, select, update

from healthpredict.errors import HealthPredictError
from healthpredict.loop.models import ModelSlot
from healthpredict.loop.windows import WindowClock
from healthpredict.monitoring.drift import DriftMonitor
from healthpredict.monitoring.policy import Policy
from healthpredict.monitoring.tables import create_schema, loop_runs
from healthpredict.pipelines.profile import MonitoringProfile
from healthpredict.settings import Settings

Progress = Callable[[str], None]
# The sections of the settings that shape a replay's results: it resumes only under the same
# values (a threshold added to them later is covered without being listed here).
FINGERPRINT_SECTIONS = ("training", "gate", "monitoring")
# Except where the run is stored and the files its policy and scenarios were read from: the
# policy and the scenarios themselves are hashed, and a run whose store is reached by another
# URL is the same run.
NOT_FINGERPRINTED = {
    "monitoring": {"monitoring_db_url", "deployment", "policy", "policies_file", "scenarios_file"}
}


class LoopError(HealthPredictError):
    """The loop cannot run as asked (nothing was half-written)."""


@dataclass(frozen=True)
class Origin:
    """Where a deployment's loop came from: written once, when its first window is monitored."""

    stream: str  # live | natural | exchangeable
    scenario_set: str = ""
    scenarios: dict[str, Any] | None = None
    data_hash: str = ""
    batches: int = 0


@dataclass
class LoopContext:
    """What the phases work with (see the module docstring)."""

    settings: Settings
    engine: Engine
    deployment: str
    clock: WindowClock
    policy_name: str
    policy: Policy
    slot: ModelSlot
    initial_data: Callable[[], pd.DataFrame]
    owns_champion: bool
    origin: Origin = field(default_factory=lambda: Origin("live"))
    reports_dir: Path | None = None
    progress: Progress = field(default=lambda _line: None)
    _profiles: dict[str, MonitoringProfile] = field(default_factory=dict, repr=False)
    _monitors: dict[str, DriftMonitor] = field(default_factory=dict, repr=False)

    def profile(self, version: str) -> MonitoringProfile:
        """The monitoring profile of ``version``, read once."""
        if version not in self._profiles:
            self._profiles[version] = self.slot.profile(version)
        return self._profiles[version]

    def drift_monitor(self, version: str) -> DriftMonitor:
        """The drift monitor of ``version`` against its own reference, built once."""
        if version not in self._monitors:
            profile = self.profile(version)
            self._monitors[version] = DriftMonitor(
                profile.reference,
                profile.baseline,
                profile.weights,
                level=self.settings.monitoring.drift_false_alarm_rate,
                prediction_threshold=self.settings.monitoring.prediction_drift_threshold,
            )
        return self._monitors[version]


def fingerprint(context: LoopContext, initial_version: str) -> str:
    """Hash of everything that shapes a replay's results: it resumes only if this matches."""
    settings = context.settings
    payload = {
        "policy": context.policy.model_dump(mode="json"),
        "origin": context.origin.__dict__,
        "initial": initial_version,
        "slot": context.slot.kind,
        "clock": [context.clock.origin.isoformat(), context.clock.length.total_seconds()],
        "settings": {
            name: getattr(settings, name).model_dump(
                mode="json", exclude=NOT_FINGERPRINTED.get(name, set())
            )
            for name in FINGERPRINT_SECTIONS
        },
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def ensure_deployment(context: LoopContext, reference_auc: float | None = None) -> str:
    """The deployment's initial champion; its record is created on first use.

    A replay resumes only under the configuration it started with; a live deployment may
    change its policy and thresholds between windows, but never its window clock (windows
    already recorded would mean something else).

    Raises:
        LoopError: The configuration or the clock differs from the recorded one.
    """
    create_schema(context.engine)
    with context.engine.connect() as connection:
        row = (
            connection.execute(
                select(loop_runs).where(loop_runs.c.deployment == context.deployment)
            )
            .mappings()
            .first()
        )
    if row is None:
        return _create(context, reference_auc)
    _check_clock(context, row)
    if context.origin.stream != "live" and row["fingerprint"] != fingerprint(
        context, row["initial_version"]
    ):
        raise LoopError(
            f"run {context.deployment!r} exists with a different configuration (policy, "
            "scenarios, data, thresholds or initial model): pick another --run-name or pass "
            "--restart"
        )
    if context.origin.stream == "live":
        _record_policy(context)
    return str(row["initial_version"])


def run_key(context: LoopContext) -> str:
    """``<deployment>@<created>``: names the versions this deployment's loop trains, so a
    deployment restarted under the same name never reuses an earlier incarnation's model.

    Raises:
        LoopError: The deployment has no record yet.
    """
    with context.engine.connect() as connection:
        created = connection.execute(
            select(loop_runs.c.created_at).where(loop_runs.c.deployment == context.deployment)
        ).scalar()
    if created is None:
        raise LoopError(f"deployment {context.deployment!r} has not been monitored yet")
    return f"{context.deployment}@{created:%Y%m%dT%H%M%S}"


def _create(context: LoopContext, reference_auc: float | None) -> str:
    initial = context.slot.champion_version()
    now = datetime.now(UTC)
    origin = context.origin
    row = {
        "deployment": context.deployment,
        "policy": context.policy_name,
        "policy_config": context.policy.model_dump(mode="json"),
        "scenario_set": origin.scenario_set,
        "scenarios": origin.scenarios,
        "stream": origin.stream,
        "slot": context.slot.kind,
        "initial_version": initial,
        "reference_auc": reference_auc,
        "origin": context.clock.origin,
        "window_seconds": context.clock.length.total_seconds(),
        "fingerprint": fingerprint(context, initial),
        "created_at": now,
        "updated_at": now,
    }
    with context.engine.begin() as connection:
        connection.execute(insert(loop_runs), [row])
    return initial


def _check_clock(context: LoopContext, row: Any) -> None:
    recorded = row["origin"] if row["origin"].tzinfo else row["origin"].replace(tzinfo=UTC)
    if (
        recorded != context.clock.origin
        or abs(row["window_seconds"] - context.clock.length.total_seconds()) > 1e-6
    ):
        raise LoopError(
            f"deployment {context.deployment!r} is monitored in windows of "
            f"{row['window_seconds'] / 86400:g} days from {recorded.isoformat()}; the settings "
            f"ask for {context.clock.length.total_seconds() / 86400:g} days from "
            f"{context.clock.origin.isoformat()}: set HEALTHPREDICT_MONITOR_ORIGIN and "
            "HEALTHPREDICT_MONITOR_WINDOW_DAYS back"
        )


def _record_policy(context: LoopContext) -> None:
    with context.engine.begin() as connection:
        connection.execute(
            update(loop_runs)
            .where(loop_runs.c.deployment == context.deployment)
            .values(
                policy=context.policy_name,
                policy_config=context.policy.model_dump(mode="json"),
                updated_at=datetime.now(UTC),
            )
        )
