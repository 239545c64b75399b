"""The simulation loop end to end on a synthetic extract, with a real MLflow store.

Covers what the loop promises: every batch recorded once, quarantine with the reason, injected
labels carried into stored batches, training and evaluation, each policy, a failed retrain
leaving the champion serving, and resuming after a crash with the same results as a run that
was never interrupted.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from sqlalchemy import func, select
from typer.testing import CliRunner

from healthpredict.cli import app
from healthpredict.data.prepare import TARGET
from healthpredict.data.timeline import load_manifest, load_window
from healthpredict.modeling.train import ModelKind, default_params, fit_model
from healthpredict.monitoring import store
from healthpredict.monitoring.policy import load_policies
from healthpredict.monitoring.scenarios import inject, load_scenarios
from healthpredict.pipelines import simulate as simulate_module
from healthpredict.pipelines import simulation_retrain
from healthpredict.pipelines.model_slots import FolderSlot, RegistrySlot
from healthpredict.pipelines.prepare_data import prepare_data
from healthpredict.pipelines.simulate import Simulation, SimulationPlan, build_plan, simulate
from healthpredict.pipelines.simulation_rows import PREDICTED, StepRecorder
from healthpredict.pipelines.streams import natural_stream
from healthpredict.pipelines.train_and_register import train_and_register
from healthpredict.settings import Settings
from tests.conftest import make_settings
from tests.synthetic import make_raw_frame, write_csv

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Prepared synthetic timeline (30 % + 7 batches) and a registered champion."""
    folder = tmp_path_factory.mktemp("simulation")
    source = folder / "diabetic_data.csv"
    write_csv(make_raw_frame(4000, seed=21), str(source))
    settings = make_settings(folder, source, initial_window_fraction=0.3, n_batches=7)
    prepare_data(settings)
    train_and_register(settings)
    return settings


@pytest.fixture(scope="module")
def main_run(registered: Settings) -> simulate_module.RunHistory:
    """The default scenarios and policy through the registry, as `healthpredict simulate`."""
    return simulate(registered, build_plan(registered, "drift"))


def folder_plan(settings: Settings, run: str, policy: str) -> SimulationPlan:
    """A what-if run whose champion is a model fitted here on the initial window."""
    stream = natural_stream(settings)
    slot = FolderSlot(settings.simulation_dir / run / "models", settings.model_name)
    if not slot.has_champion():
        params = default_params()
        model = fit_model(ModelKind.LIGHTGBM, stream.reference, params, 3, settings.seed)
        slot.seed(model.pipeline, params, {})
    return SimulationPlan(
        run, policy, load_policies(None)[policy], load_scenarios(None), stream, slot
    )


def count(settings: Settings, table: store.Table, run: str) -> int:
    engine = store.make_engine(settings.monitoring_url)
    with engine.begin() as connection:
        if table is store.predictions:
            where = table.c.request_id.like(f"simulation:{run}:%")
        else:
            where = table.c.run == run
        query = select(func.count()).select_from(table).where(where)
        return int(connection.execute(query).scalar() or 0)


def test_every_batch_is_recorded_and_the_bad_one_quarantined(
    registered: Settings, main_run: simulate_module.RunHistory
) -> None:
    batches = main_run.batches
    assert batches["batch"].tolist() == list(range(1, 8))
    quarantined = batches[batches["status"] == "quarantined"]
    assert quarantined["batch"].tolist() == [3]
    assert "a1c_result" in quarantined["quarantine_reason"].iloc[0]
    folder = registered.simulation_dir / main_run.name
    kept = pd.read_parquet(folder / "quarantine" / "batch_003.parquet")
    manifest = load_manifest(registered.prepared_dir)
    assert len(kept) == manifest.window("batch_003").rows  # nothing lost
    completed = batches[batches["status"] == "completed"]
    assert count(registered, store.predictions, main_run.name) == completed["n_rows"].sum()
    assert set(main_run.feature_drift["batch"]) == set(completed["batch"])
    assert completed["estimated_auc"].between(0.5, 1.0).all()
    reports = registered.simulation_dir / main_run.name / "reports"
    assert sorted(p.name for p in reports.glob("batch_00?.html")) == [
        f"batch_00{b}.html" for b in completed["batch"]
    ]


def test_labels_arrive_one_batch_late(main_run: simulate_module.RunHistory) -> None:
    realised = main_run.batches.set_index("batch")["realised_auc"]
    assert np.isnan(realised[7]) and np.isnan(realised[3])  # not yet known / quarantined
    assert realised.drop([3, 7]).notna().all()


def test_injected_labels_reach_storage_training_and_evaluation(
    registered: Settings, main_run: simulate_module.RunHistory
) -> None:
    manifest = load_manifest(registered.prepared_dir)
    original = load_window(registered.prepared_dir, manifest, "batch_004")
    expected, [record] = inject(original, load_scenarios(None), 4, registered.seed)
    assert record.kind == "concept_drift" and record.labels_changed > 0
    folder = registered.simulation_dir / main_run.name
    stored = pd.read_parquet(folder / "batches" / "batch_004.parquet")
    assert stored[TARGET].tolist() == expected[TARGET].tolist()
    plan = build_plan(registered, "drift")
    engine = store.make_engine(registered.monitoring_url)
    train, holdout = Simulation(registered, plan, engine)._training_data(4)
    in_training = train[train["sequence"].isin(stored["sequence"])]
    relabelled = stored.set_index("sequence")[TARGET]
    assert (in_training.set_index("sequence")[TARGET] == relabelled[in_training["sequence"]]).all()
    assert set(holdout["patient_key"]).isdisjoint(set(in_training["patient_key"]))
    realised = main_run.batches.set_index("batch").loc[4, "realised_auc"]
    assert realised == pytest.approx(roc_auc_score(stored[TARGET], stored[PREDICTED]))


RUN_TABLES = (
    store.simulation_batches,
    store.feature_drift,
    store.simulation_decisions,
    store.predictions,
    store.batch_performance,
    store.scenario_injections,
)


def row_counts(settings: Settings, run: str) -> dict[str, int]:
    return {table.name: count(settings, table, run) for table in RUN_TABLES}


def test_running_again_adds_nothing(
    registered: Settings, main_run: simulate_module.RunHistory
) -> None:
    before = row_counts(registered, main_run.name)
    again = simulate(registered, build_plan(registered, "drift"))
    assert row_counts(registered, main_run.name) == before
    pd.testing.assert_frame_equal(again.batches, main_run.batches)


def test_changed_configuration_is_refused_not_mixed(
    registered: Settings, main_run: simulate_module.RunHistory
) -> None:
    changed = Settings(**{**registered.model_dump(), "drift_threshold": 0.5})
    with pytest.raises(simulate_module.SimulationError, match="different configuration"):
        simulate(changed, build_plan(changed, "drift", run=main_run.name))


def test_policies_never_and_scheduled(registered: Settings) -> None:
    never = simulate(registered, folder_plan(registered, "t-never", "never"))
    assert never.retrains == 0 and set(never.batches["model_version"].dropna()) == {"1"}
    scheduled = simulate(registered, folder_plan(registered, "t-scheduled", "scheduled"))
    # Labels of batches 1-6 arrive at steps 2-7; batch 3 was quarantined, so no retrain at 4.
    retrained = scheduled.batches.loc[scheduled.batches["decision"] == "retrain", "batch"]
    assert retrained.tolist() == [2, 3, 5, 6, 7]
    assert set(scheduled.batches["outcome"]) <= {"", "promoted", "refused"}


def test_a_failed_retrain_leaves_the_champion_and_is_recorded(
    registered: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise MemoryError("out of memory while training")

    plan = folder_plan(registered, "t-failing", "scheduled")
    monkeypatch.setattr(simulation_retrain, "fit_model", broken)
    history = simulate(registered, plan)
    retrains = history.batches[history.batches["decision"] == "retrain"]
    assert (retrains["outcome"] == "failed").all() and len(retrains) == 5
    assert set(history.batches["model_version"].dropna()) == {"1"}
    engine = store.make_engine(registered.monitoring_url)
    with engine.begin() as connection:
        errors = (
            connection.execute(
                select(store.simulation_decisions.c.error).where(
                    store.simulation_decisions.c.run == "t-failing",
                    store.simulation_decisions.c.outcome == "failed",
                )
            )
            .scalars()
            .all()
        )
    assert all("out of memory" in e for e in errors)


def test_a_crash_mid_run_resumes_to_the_same_result(
    registered: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = simulate(registered, folder_plan(registered, "t-straight", "scheduled"))
    plan = folder_plan(registered, "t-crashed", "scheduled")
    simulate(registered, plan, max_batches=2)
    original_commit = StepRecorder.commit

    def crash_at_step_5(self: StepRecorder, step: int, rows: object) -> None:
        if step == 5:
            raise KeyboardInterrupt("killed")  # after training and gating, before the commit
        original_commit(self, step, rows)  # type: ignore[arg-type]

    monkeypatch.setattr(StepRecorder, "commit", crash_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        simulate(registered, plan)
    assert count(registered, store.simulation_batches, "t-crashed") == 4
    monkeypatch.setattr(StepRecorder, "commit", original_commit)
    resumed = simulate(registered, folder_plan(registered, "t-crashed", "scheduled"))
    columns = ["batch", "status", "model_version", "drift_share", "estimated_auc",
               "realised_auc", "decision", "outcome", "new_version"]  # fmt: skip
    pd.testing.assert_frame_equal(resumed.batches[columns], reference.batches[columns])
    # The model trained by the crashed step was found and reused, not trained again.
    index_file = registered.simulation_dir / "t-crashed" / "models" / "versions.json"
    index = json.loads(index_file.read_text())
    assert len(index["versions"]) == 1 + resumed.retrains


def test_cli_names_bad_policy_and_missing_champion(tmp_path: Path, registered: Settings) -> None:
    runner = CliRunner()
    env = {"HEALTHPREDICT_DATA_DIR": str(registered.data_dir)}
    result = runner.invoke(app, ["simulate", "--policy", "sometimes"], env=env)
    assert result.exit_code == 1 and "unknown policy 'sometimes'" in result.output
    empty = {"HEALTHPREDICT_DATA_DIR": str(tmp_path / "nothing")}
    result = runner.invoke(app, ["simulate"], env=empty)
    assert result.exit_code == 1 and "error:" in result.output


def test_registry_run_moves_the_alias_only_through_the_gate(
    registered: Settings, main_run: simulate_module.RunHistory
) -> None:
    slot = RegistrySlot(registered)
    promoted = main_run.batches.loc[main_run.batches["outcome"] == "promoted", "new_version"]
    expected = promoted.iloc[-1] if len(promoted) else "1"
    assert slot.champion_version() == expected


def test_a_policy_can_search_before_each_retrain(registered: Settings) -> None:
    settings = Settings(
        **{**registered.model_dump(), "tune_trials": 2, "tune_folds": 2,
           "tune_time_budget_seconds": 300.0}
    )  # fmt: skip
    plan = folder_plan(settings, "t-search", "scheduled")
    searching = plan.policy.model_copy(update={"search": True})
    plan = SimulationPlan(plan.run, plan.policy_name, searching, plan.scenarios, plan.stream,
                          plan.slot)  # fmt: skip
    history = simulate(settings, plan, max_batches=2)
    assert history.batches.loc[history.batches["batch"] == 2, "decision"].item() == "retrain"
    slot = plan.slot
    assert isinstance(slot, FolderSlot)
    version = history.batches["new_version"].dropna().item()
    searched, seeded = slot.params(version)["lightgbm"], slot.params("1")["lightgbm"]
    assert searched != seeded  # the retrain used the search's configuration
