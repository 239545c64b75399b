"""Drift detection, retraining value, and speed of the monitoring loop, on the real extract.

Three parts, each printing its figures:

1. Detection. The exchangeable control (batches drawn at random from the reference period, so
   no drift by construction) gives the false-alarm rate per batch; each scenario of the default
   set, injected alone into the same kind of stream from batch 3, gives the delay from onset
   to the first alarm (label-based alarms count when the labels arrive).
2. Retraining value. The natural time order with the default scenario set, under the never,
   scheduled and drift policies: realised ROC-AUC per batch, its mean after the concept drift
   starts, and the number of retrains.
3. Speed. The default simulation through the registry (what `healthpredict simulate` runs),
   and the monitors' time per batch.

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

from healthpredict.data.prepare import TARGET
from healthpredict.data.timeline import batch_name
from healthpredict.modeling.metrics import ScoredSample, roc_auc
from healthpredict.modeling.train import ModelKind, default_params, fit_model
from healthpredict.monitoring import store
from healthpredict.monitoring.history import RunHistory, read_history
from healthpredict.monitoring.policy import load_policies
from healthpredict.monitoring.scenarios import NO_SCENARIOS, ScenarioSet, load_scenarios
from healthpredict.pipelines.model_slots import FolderSlot
from healthpredict.pipelines.prepare_data import prepare_data
from healthpredict.pipelines.simulate import Simulation, SimulationPlan, build_plan
from healthpredict.pipelines.simulation_rows import PREDICTED
from healthpredict.pipelines.streams import Stream, exchangeable_stream, natural_stream
from healthpredict.pipelines.train_and_register import train_and_register
from healthpredict.settings import Settings

CONTROL_BATCHES = 40
SCENARIO_ONSET = 3
SCENARIO_BATCHES = 6
POLICIES = ("never", "scheduled", "drift")
EXPANDING = ("scheduled", "drift")  # also replayed with an expanding window, for comparison


def run_plan(settings: Settings, engine: Engine, plan: SimulationPlan) -> RunHistory:
    """Run a plan to the end and read its history back."""
    Simulation(settings, plan, engine).run()
    return read_history(engine, plan.run)


def seeded_slot(settings: Settings, run: str, pipeline: object, params: dict) -> FolderSlot:
    """A folder slot whose champion is the given fitted pipeline."""
    slot = FolderSlot(settings.simulation_dir / run / "models", settings.model_name)
    slot.seed(pipeline, params, {"training_window": "benchmark"})  # type: ignore[arg-type]
    return slot


def alarm_steps(engine: Engine, run: str) -> dict[int, int]:
    """For each batch with an alarm: the step at which its first alarm was raised."""
    batches, performance = store.simulation_batches, store.batch_performance
    with engine.begin() as connection:
        free = connection.execute(
            select(batches.c.batch, batches.c.alarms).where(batches.c.run == run)
        ).all()
        late = connection.execute(
            select(performance.c.batch, performance.c.known_at_step, performance.c.alarms).where(
                performance.c.run == run
            )
        ).all()
    steps = {batch: batch for batch, alarms in free if alarms}
    for batch, known_at, alarms in late:
        if alarms and batch not in steps:
            steps[batch] = known_at
    return steps


def detection(settings: Settings, engine: Engine) -> None:
    """False alarms on the exchangeable control, delay per injected scenario."""
    print("\n== 1. Detection (exchangeable stream: batches drawn from the reference period)")
    batch_rows = natural_stream(settings).batches[0].shape[0]
    control = exchangeable_stream(settings, CONTROL_BATCHES, batch_rows)
    params = default_params()
    model = fit_model(
        ModelKind.LIGHTGBM, control.reference, params, settings.cv_folds, settings.seed
    )
    never = load_policies(None)["never"]
    run = "bench-control"
    plan = SimulationPlan(run, "never", never, NO_SCENARIOS, control,
                          seeded_slot(settings, run, model.pipeline, params))  # fmt: skip
    history = run_plan(settings, engine, plan)
    alarmed = history.batches["alarm"].sum()
    print(f"control: {alarmed} of {len(history.batches)} batches alarmed "
          f"(false-alarm rate {alarmed / len(history.batches):.3f}; target <= 0.05)")  # fmt: skip
    if alarmed:
        print("  alarms:", "; ".join(history.batches.loc[history.batches.alarm, "alarm_reasons"]))
    print(f"  max feature PSI {history.feature_drift['statistic'].max():.4f} (threshold "
          f"{settings.drift_threshold}); max prediction PSI "
          f"{history.batches['prediction_drift'].max():.4f}")  # fmt: skip
    short = Stream("exchangeable", control.reference, control.batches[:SCENARIO_BATCHES],
                   control.data_hash)  # fmt: skip
    for scenario in load_scenarios(None).scenarios:
        one = scenario.model_copy(
            update={
                "start": SCENARIO_ONSET,
                "end": None if scenario.end is None else SCENARIO_ONSET,
            }
        )
        scenarios = ScenarioSet(name=f"only-{scenario.name}", scenarios=[one])
        run = f"bench-detect-{scenario.name}"
        plan = SimulationPlan(run, "never", never, scenarios, short,
                              seeded_slot(settings, run, model.pipeline, params))  # fmt: skip
        history = run_plan(settings, engine, plan)
        steps = alarm_steps(engine, run)
        after = [step for batch, step in steps.items() if batch >= SCENARIO_ONSET]
        before = [batch for batch in steps if batch < SCENARIO_ONSET]
        delay = (min(after) - SCENARIO_ONSET) if after else None
        reasons = history.batches.loc[history.batches.batch == SCENARIO_ONSET, "alarm_reasons"]
        print(f"{scenario.kind:<16} {scenario.name:<30} delay "
              f"{'not detected' if delay is None else f'{delay} batch(es)'}; alarms before onset: "
              f"{len(before)}; at onset: {reasons.iloc[0][:150] or '-'}")  # fmt: skip


def batch_aucs(settings: Settings, run: str, n_batches: int) -> list[float]:
    """Realised ROC-AUC of every scored batch, from the stored batch files (labels included)."""
    aucs = []
    for step in range(1, n_batches + 1):
        path = settings.simulation_dir / run / "batches" / f"{batch_name(step)}.parquet"
        if not path.is_file():
            aucs.append(float("nan"))
            continue
        batch = pd.read_parquet(path)
        sample = ScoredSample.build(batch[TARGET].to_numpy(), batch[PREDICTED].to_numpy(), 0.1)
        aucs.append(roc_auc(sample, np.ones(len(batch))))
    return aucs


def retraining_value(settings: Settings, engine: Engine) -> None:
    """The three policies on the natural stream with the default scenarios."""
    print("\n== 2. Retraining value (natural time order + default scenarios)")
    stream = natural_stream(settings)
    scenarios = load_scenarios(None)
    onset = next(s.start for s in scenarios.scenarios if s.kind == "concept_drift")
    params = default_params()
    model = fit_model(
        ModelKind.LIGHTGBM, stream.reference, params, settings.cv_folds, settings.seed
    )
    policies = load_policies(None)
    variants = [(name, policies[name]) for name in POLICIES] + [
        (f"{name} (expanding)", policies[name].model_copy(update={"window": "expanding"}))
        for name in EXPANDING
    ]
    rows = []
    for name, policy in variants:
        run = "bench-value-" + re.sub(r"[^a-z]+", "-", name).strip("-")
        started = time.perf_counter()
        plan = SimulationPlan(run, name, policy, scenarios, stream,
                              seeded_slot(settings, run, model.pipeline, params))  # fmt: skip
        history = run_plan(settings, engine, plan)
        seconds = time.perf_counter() - started
        aucs = batch_aucs(settings, run, len(stream.batches))
        after = [a for i, a in enumerate(aucs, start=1) if i > onset and a == a]
        rows.append({
            "policy": name, "retrains": history.retrains, "promotions": history.promotions,
            "mean AUC": np.nanmean(aucs), f"mean AUC after batch {onset}": np.mean(after),
            **{f"b{i}": a for i, a in enumerate(aucs, start=1)}, "seconds": seconds,
        })  # fmt: skip
    table = pd.DataFrame(rows).set_index("policy")
    print(table.round(3).to_string())
    drift, scheduled = table.loc["drift"], table.loc["scheduled"]
    column = f"mean AUC after batch {onset}"
    print(f"drift vs scheduled after the concept drift: {drift[column]:.3f} vs "
          f"{scheduled[column]:.3f} with {drift.retrains} vs {scheduled.retrains} retrains "
          f"(target: >= with at most half)")  # fmt: skip


def speed(settings: Settings, engine: Engine) -> None:
    """The default simulation through the registry, and the monitors' time per batch."""
    print("\n== 3. Speed (default simulation through the MLflow registry)")
    train_and_register(settings)
    started = time.perf_counter()
    plan = build_plan(settings, settings.policy)
    history = run_plan(settings, engine, plan)
    seconds = time.perf_counter() - started
    batches = store.simulation_batches
    with engine.begin() as connection:
        monitor = connection.execute(
            select(batches.c.monitor_seconds, batches.c.n_rows).where(
                batches.c.run == plan.run, batches.c.monitor_seconds.is_not(None)
            )
        ).all()
    per_batch = [s for s, _ in monitor]
    print(f"{len(history.batches)} batches, {history.retrains} retrain(s): {seconds:.0f} s "
          f"(target < 300 s)")  # fmt: skip
    print(
        f"monitors per batch of ~{monitor[0][1]:,} rows: median {np.median(per_batch):.2f} s, "
        f"max {max(per_batch):.2f} s (first batch includes Evidently's import; target < 2 s)"
    )


def main() -> None:
    """Prepare the extract into a temporary folder and run the three parts."""
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(data_dir=Path(folder))
        prepare_data(settings)
        engine = store.make_engine(settings.monitoring_url)
        store.create_schema(engine)
        detection(settings, engine)
        retraining_value(settings, engine)
        speed(settings, engine)
        engine.dispose()


if __name__ == "__main__":
    main()
