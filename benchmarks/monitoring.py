"""Drift detection, retraining value and the monitors' speed, on the real extract.

Three parts, each printing its figures; every replay runs the loop a deployment runs (windows
of a prediction log, outcomes, policy, gate), in process (the service's own scoring code):

1. Detection. The exchangeable control (batches drawn at random from the reference period, so
   no drift by construction) gives the false-alarm rate per window; each scenario of the
   default set, injected alone into the same kind of stream from window 3, gives the delay
   from onset to the first alarm (label-based alarms count when the outcomes arrive).
2. Retraining value. The natural time order with the default scenario set, under the never,
   scheduled and drift policies: realised ROC-AUC per window, its mean after the concept drift
   starts, and the number of retrains.
3. The monitors' time per window of about 10,000 predictions (the whole story through the
   real service, and one window read from PostgreSQL, are in benchmarks/production_loop.py).

    make benchmark-monitoring    # or: .venv/bin/python benchmarks/monitoring.py
"""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import Engine, select

from healthpredict.loop.folder import FolderSlot
from healthpredict.loop.models import NewModel
from healthpredict.loop.plans import fitted_seed
from healthpredict.loop.replay import ReplayPlan, replay
from healthpredict.loop.streams import Stream, exchangeable_stream, natural_stream
from healthpredict.monitoring import tables
from healthpredict.monitoring.history import RunHistory
from healthpredict.monitoring.policy import Policy, load_policies
from healthpredict.monitoring.scenarios import NO_SCENARIOS, ScenarioSet, load_scenarios
from healthpredict.monitoring.store import make_engine
from healthpredict.pipelines.prepare_data import prepare_data
from healthpredict.settings import Settings

CONTROL_BATCHES = 40
SCENARIO_ONSET = 3
SCENARIO_BATCHES = 6
POLICIES = ("never", "scheduled", "drift")
EXPANDING = ("scheduled", "drift")  # also replayed with an expanding window, for comparison


def run_plan(
    settings: Settings,
    run: str,
    policy: tuple[str, Policy],
    scenarios: ScenarioSet,
    stream: Stream,
    seed: NewModel,
) -> RunHistory:
    """Replay ``stream`` in process from the champion ``seed``; return its history."""
    slot = FolderSlot(
        settings.data.simulation_dir / run / "models",
        settings.tracking.model_name,
        settings.compiled_trees_dir,
    )
    slot.seed(seed)
    plan = ReplayPlan(run, policy[0], policy[1], scenarios, stream, slot, through_service=False)
    return replay(settings, plan).history


def alarm_windows(engine: Engine, run: str) -> dict[int, int]:
    """For each window with an alarm: the window at which its first alarm was raised."""
    windows, performance = tables.windows, tables.window_performance
    with engine.connect() as connection:
        free = connection.execute(
            select(windows.c.window, windows.c.alarms).where(windows.c.deployment == run)
        ).all()
        late = connection.execute(
            select(performance.c.window, performance.c.known_at_window, performance.c.alarms).where(
                performance.c.deployment == run
            )
        ).all()
    found = {number: number for number, alarms in free if alarms}
    for number, known_at, alarms in late:
        if alarms and number not in found:
            found[number] = known_at
    return found


def detection(settings: Settings, engine: Engine) -> None:
    """False alarms on the exchangeable control, delay per injected scenario."""
    print("\n== 1. Detection (exchangeable stream: batches drawn from the reference period)")
    batch_rows = natural_stream(settings).batches[0].shape[0]
    control = exchangeable_stream(settings, CONTROL_BATCHES, batch_rows)
    seed = fitted_seed(settings, control)
    never = ("never", load_policies(None)["never"])
    history = run_plan(settings, "bench-control", never, NO_SCENARIOS, control, seed)
    alarmed = history.batches["alarm"].sum()
    print(f"control: {alarmed} of {len(history.batches)} windows alarmed "
          f"(false-alarm rate {alarmed / len(history.batches):.3f}; target <= 0.05)")  # fmt: skip
    if alarmed:
        print("  alarms:", "; ".join(history.batches.loc[history.batches.alarm, "alarm_reasons"]))
    features = history.feature_drift
    ratio = (features["statistic"] / features["threshold"].where(features["threshold"] > 0)).max()
    print(f"  largest field statistic {ratio:.2f}x its calibrated threshold; max prediction PSI "
          f"{history.batches['prediction_drift'].max():.4f}")  # fmt: skip
    short = Stream("exchangeable", control.reference, control.batches[:SCENARIO_BATCHES],
                   control.data_hash)  # fmt: skip
    for scenario in load_scenarios(None).scenarios:
        end = None if scenario.end is None else SCENARIO_ONSET
        one = scenario.model_copy(update={"start": SCENARIO_ONSET, "end": end})
        scenarios = ScenarioSet(name=f"only-{scenario.name}", scenarios=[one])
        run = f"bench-detect-{scenario.name}"
        history = run_plan(settings, run, never, scenarios, short, seed)
        found = alarm_windows(engine, run)
        after = [at for number, at in found.items() if number >= SCENARIO_ONSET]
        before = [number for number in found if number < SCENARIO_ONSET]
        delay = (min(after) - SCENARIO_ONSET) if after else None
        reasons = history.batches.loc[history.batches.batch == SCENARIO_ONSET, "alarm_reasons"]
        print(f"{scenario.kind:<16} {scenario.name:<30} delay "
              f"{'not detected' if delay is None else f'{delay} window(s)'}; alarms before onset: "
              f"{len(before)}; at onset: {reasons.iloc[0][:150] or '-'}")  # fmt: skip


def retraining_value(settings: Settings) -> None:
    """The three policies on the natural stream with the default scenarios."""
    print("\n== 2. Retraining value (natural time order + default scenarios)")
    stream = natural_stream(settings)
    scenarios = load_scenarios(None)
    onset = next(s.start for s in scenarios.scenarios if s.kind == "concept_drift")
    seed = fitted_seed(settings, stream)
    policies = load_policies(None)
    variants = [(name, policies[name]) for name in POLICIES] + [
        (f"{name} (expanding)", policies[name].model_copy(update={"window": "expanding"}))
        for name in EXPANDING
    ]
    rows = []
    for name, policy in variants:
        run = "bench-value-" + re.sub(r"[^a-z]+", "-", name).strip("-")
        started = time.perf_counter()
        history = run_plan(settings, run, (name, policy), scenarios, stream, seed)
        seconds = time.perf_counter() - started
        aucs = history.batches["realised_auc"].to_numpy(dtype=float)
        after = [a for i, a in enumerate(aucs, start=1) if i > onset and a == a]
        rows.append({
            "policy": name, "retrains": history.retrains, "promotions": history.promotions,
            "mean AUC": np.nanmean(aucs), f"mean AUC after window {onset}": np.mean(after),
            **{f"w{i}": a for i, a in enumerate(aucs, start=1)}, "seconds": seconds,
        })  # fmt: skip
    table = pd.DataFrame(rows).set_index("policy")
    print(table.round(3).to_string())
    drift, scheduled = table.loc["drift"], table.loc["scheduled"]
    column = f"mean AUC after window {onset}"
    print(f"drift vs scheduled after the concept drift: {drift[column]:.3f} vs "
          f"{scheduled[column]:.3f} with {drift.retrains} vs {scheduled.retrains} retrains "
          f"(target: >= with at most half)")  # fmt: skip


def monitor_speed(engine: Engine) -> None:
    """The monitors' time per window, over every window the replays above monitored."""
    print("\n== 3. Monitors per window (quality, drift, estimate, realised performance)")
    windows = tables.windows
    with engine.connect() as connection:
        rows = connection.execute(
            select(windows.c.monitor_seconds, windows.c.n_predictions).where(
                windows.c.monitor_seconds.is_not(None), windows.c.status == "completed"
            )
        ).all()
    seconds = np.array([s for s, _ in rows])
    size = int(np.median([n for _, n in rows]))
    print(f"{len(rows)} windows of ~{size:,} predictions: median {np.median(seconds):.2f} s, "
          f"p95 {np.quantile(seconds, 0.95):.2f} s, max {seconds.max():.2f} s (the first of a "
          f"process includes Evidently's import; target < 2 s)")  # fmt: skip


def main() -> None:
    """Prepare the extract into a temporary folder and run the three parts."""
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings.from_flat(data_dir=Path(folder))
        prepare_data(settings)
        engine = make_engine(settings.monitoring_url)
        tables.create_schema(engine)
        detection(settings, engine)
        retraining_value(settings)
        monitor_speed(engine)
        engine.dispose()


if __name__ == "__main__":
    main()
