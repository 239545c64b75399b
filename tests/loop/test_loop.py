"""The production loop end to end on a synthetic extract, with a real MLflow store.

The main replay goes through the real service (its own process on loopback): every window is
monitored from the service's prediction log, the refused records of the recoded batch are
counted and kept, outcomes arrive a window late through ``/outcomes``, and the closing window
measures the last one. What-if replays run the same loop in process. Also covered: running
again adds nothing, a changed configuration is refused, each policy, a failed retrain, a crash
mid-run resuming to the same result, and the time-travel refusal.
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
from healthpredict.loop import plans, retrain
from healthpredict.loop.context import LoopError
from healthpredict.loop.folder import FolderSlot
from healthpredict.loop.models import RegistrySlot
from healthpredict.loop.plans import build_plan, fitted_seed
from healthpredict.loop.replay import ReplayPlan, context_for, replay
from healthpredict.loop.streams import StandInIds, encounter_id, natural_stream
from healthpredict.loop.windows import labelled
from healthpredict.modeling import champion
from healthpredict.monitoring import tables
from healthpredict.monitoring.equity import GROUP_HISTORY_COLUMNS
from healthpredict.monitoring.history import RunHistory
from healthpredict.monitoring.policy import load_policies
from healthpredict.monitoring.scenarios import inject, load_scenarios
from healthpredict.monitoring.store import make_engine
from healthpredict.pipelines.prepare_data import prepare_data
from healthpredict.pipelines.train_and_register import train_and_register
from healthpredict.settings import Settings
from tests.conftest import make_settings
from tests.synthetic import make_raw_frame, write_csv

pytestmark = pytest.mark.integration
RUN_TABLES = (
    tables.windows,
    tables.window_versions,
    tables.feature_drift,
    tables.decisions,
    tables.predictions,
    tables.rejected_records,
    tables.outcomes,
    tables.window_performance,
    tables.window_groups,
    tables.scenario_injections,
)


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Prepared synthetic timeline (30 % + 7 batches) and a registered champion."""
    folder = tmp_path_factory.mktemp("loop")
    source = folder / "diabetic_data.csv"
    write_csv(make_raw_frame(4000, seed=21), str(source))
    settings = make_settings(
        folder,
        source,
        initial_window_fraction=0.3,
        n_batches=7,
        estimate_recalibration_min_rows=100,  # windows of about 400 encounters
    )
    prepare_data(settings)
    train_and_register(settings)
    return settings


@pytest.fixture(scope="module")
def main_run(registered: Settings) -> RunHistory:
    """The default scenarios and policy through the real service, as `healthpredict simulate`."""
    return replay(registered, build_plan(registered, "drift")).history


def folder_plan(settings: Settings, run: str, policy: str) -> ReplayPlan:
    """A what-if replay whose champion is a model fitted here on the initial window."""
    stream = natural_stream(settings)
    slot = FolderSlot(
        settings.data.simulation_dir / run / "models",
        settings.tracking.model_name,
        settings.compiled_trees_dir,
    )
    if not slot.has_champion():
        slot.seed(fitted_seed(settings, stream))
    return ReplayPlan(
        run, policy, load_policies(None)[policy], load_scenarios(None), stream, slot, False
    )


def count(settings: Settings, table: tables.Table, run: str) -> int:
    engine = make_engine(settings.monitoring_url)
    with engine.connect() as connection:
        query = select(func.count()).select_from(table).where(table.c.deployment == run)
        return int(connection.execute(query).scalar() or 0)


def row_counts(settings: Settings, run: str) -> dict[str, int]:
    return {table.name: count(settings, table, run) for table in RUN_TABLES}


def test_every_window_is_monitored_from_the_service_log(
    registered: Settings, main_run: RunHistory
) -> None:
    batches = main_run.batches
    assert batches["batch"].tolist() == list(range(1, 8))
    quarantined = batches[batches["status"] == "quarantined"]
    assert quarantined["batch"].tolist() == [3]
    assert "a1c_result" in quarantined["quarantine_reason"].iloc[0]
    assert "refused by the service" in quarantined["quarantine_reason"].iloc[0]
    manifest = load_manifest(registered.data.prepared_dir)
    refused = pd.read_parquet(
        registered.data.simulation_dir / main_run.name / "refused" / "w003.parquet"
    )
    assert (refused["refused_fields"] == "a1c_result").all()
    served = count(registered, tables.predictions, main_run.name)
    rejected = count(registered, tables.rejected_records, main_run.name)
    assert rejected == len(refused)  # the service counted what the client set aside
    total = sum(manifest.window(f"batch_00{n}").rows for n in range(1, 8))
    assert served + rejected == total  # nothing lost
    completed = batches[batches["status"] == "completed"]
    assert set(main_run.feature_drift["batch"]) == set(completed["batch"])
    assert completed["estimated_auc"].between(0.5, 1.0).all()
    reports = registered.data.simulation_dir / main_run.name / "reports"
    assert {p.name.split("_")[0] for p in reports.glob("w00?_v*.html")} == {
        f"w00{b}" for b in completed["batch"]
    }


def test_outcomes_arrive_a_window_late_and_close_the_story(main_run: RunHistory) -> None:
    realised = main_run.batches.set_index("batch")["realised_auc"]
    assert np.isnan(realised[3])  # quarantined: its outcomes never measure a model
    assert realised.drop([3]).notna().all()  # the last window too: the closing window


def test_the_history_carries_the_group_figures_of_the_serving_version(
    main_run: RunHistory,
) -> None:
    groups = main_run.groups
    assert list(groups.columns) == list(GROUP_HISTORY_COLUMNS)
    completed = main_run.batches[main_run.batches["status"] == "completed"]
    assert set(groups["window"]) == set(completed["batch"])  # each once its outcomes arrived
    served = completed.set_index("batch")["model_version"]
    assert (groups["version"] == groups["window"].map(served)).all()
    for _, window in groups.groupby("window"):
        assert window.iloc[0]["attribute"] == "all"
        assert set(window["attribute"]) == {"all", "age", "gender", "race"}
    # No group alarmed (the default scenarios hurt no group on their own), none named.
    assert (main_run.batches["group_alarms"] == "").all() == (groups["status"] != "alarm").all()


def test_the_estimate_error_is_recorded_once_outcomes_arrive(
    registered: Settings, main_run: RunHistory
) -> None:
    batches = main_run.batches.set_index("batch").drop([3])
    error = batches["estimate_error"]
    assert error.notna().all()
    assert np.allclose(error, batches["estimated_auc"] - batches["realised_auc"])
    engine = make_engine(registered.monitoring_url)
    query = select(tables.window_versions.c.window, tables.window_versions.c.estimate_basis)
    with engine.connect() as connection:
        basis = dict(
            connection.execute(
                query.where(tables.window_versions.c.deployment == main_run.name)
            ).all()
        )
    engine.dispose()
    assert basis[1].startswith("as served")  # no outcome known yet at window 1
    assert any(text.startswith("recalibrated on the outcomes of w") for text in basis.values())


def test_injected_labels_reach_the_outcomes_and_the_training_set(
    registered: Settings, main_run: RunHistory
) -> None:
    manifest = load_manifest(registered.data.prepared_dir)
    original = load_window(registered.data.prepared_dir, manifest, "batch_004")
    expected, [record] = inject(original, load_scenarios(None), 4, registered.training.seed)
    assert record.kind == "concept_drift" and record.labels_changed > 0
    engine = make_engine(registered.monitoring_url)
    plan = build_plan(registered, "drift")
    context = context_for(registered, plan, engine)
    window = context.clock.window(4)
    logged = labelled(engine, main_run.name, window.start, window.end)
    assert logged[TARGET].sum() == expected[TARGET].sum()  # the injected labels, as sent
    probabilities = logged["probability"].to_numpy()
    realised = main_run.batches.set_index("batch").loc[4, "realised_auc"]
    assert realised == pytest.approx(roc_auc_score(logged[TARGET], probabilities))
    train, holdout, production = retrain.training_data(context, 4)
    assert production == f"{main_run.name} windows 1-4"
    logged_rows = train[train["occurred_at"].notna()]
    numbers = context.clock.numbers(logged_rows["occurred_at"])
    assert set(numbers) == {1, 2, 4}  # the quarantined window never trains
    same_window = logged_rows[(numbers == 4).to_numpy()]
    assert set(holdout["patient_key"]).isdisjoint(same_window["patient_key"])
    assert len(holdout) > 0


def test_running_again_adds_nothing(registered: Settings, main_run: RunHistory) -> None:
    before = row_counts(registered, main_run.name)
    again = replay(registered, build_plan(registered, "drift"))
    assert again.requests == 0  # nothing was sent: no service was needed
    assert row_counts(registered, main_run.name) == before
    pd.testing.assert_frame_equal(again.history.batches, main_run.batches)


def test_changed_configuration_is_refused_not_mixed(
    registered: Settings, main_run: RunHistory
) -> None:
    changed = registered.with_flat(drift_false_alarm_rate=0.2)
    with pytest.raises(LoopError, match="different configuration"):
        replay(changed, build_plan(changed, "drift", run=main_run.name))


def test_policies_never_and_scheduled(registered: Settings) -> None:
    never = replay(registered, folder_plan(registered, "t-never", "never")).history
    assert never.retrains == 0 and set(never.batches["model_version"].dropna()) == {"1"}
    scheduled = replay(registered, folder_plan(registered, "t-scheduled", "scheduled")).history
    # Outcomes of windows 1-6 arrive at windows 2-7; window 3 was quarantined, so none at 4.
    retrained = scheduled.batches.loc[scheduled.batches["decision"] == "retrain", "batch"]
    assert retrained.tolist() == [2, 3, 5, 6, 7]
    assert set(scheduled.batches["outcome"]) <= {"", "promoted", "refused"}


def test_a_failed_retrain_leaves_the_champion_and_is_recorded(
    registered: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise MemoryError("out of memory while training")

    plan = folder_plan(registered, "t-failing", "scheduled")
    monkeypatch.setattr(retrain, "fit_model", broken)
    history = replay(registered, plan).history
    retrains = history.batches[history.batches["decision"] == "retrain"]
    assert (retrains["outcome"] == "failed").all() and len(retrains) == 5
    assert set(history.batches["model_version"].dropna()) == {"1"}
    engine = make_engine(registered.monitoring_url)
    with engine.connect() as connection:
        errors = connection.execute(
            select(tables.decisions.c.error).where(
                tables.decisions.c.deployment == "t-failing",
                tables.decisions.c.outcome == "failed",
            )
        ).scalars()
        assert all("out of memory" in e for e in errors)


def test_a_crash_mid_run_resumes_to_the_same_result(
    registered: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from healthpredict.loop import commit

    reference = replay(registered, folder_plan(registered, "t-straight", "scheduled")).history
    plan = folder_plan(registered, "t-crashed", "scheduled")
    replay(registered, plan, max_batches=2)
    original = commit._replace_window

    def crash_at_window_5(connection: object, context: object, pending: object) -> None:
        if pending.window == 5:  # type: ignore[attr-defined]
            raise KeyboardInterrupt("killed")  # after training and gating, before the commit
        original(connection, context, pending)  # type: ignore[arg-type]

    monkeypatch.setattr(commit, "_replace_window", crash_at_window_5)
    with pytest.raises(KeyboardInterrupt):
        replay(registered, plan)
    assert count(registered, tables.windows, "t-crashed") == 4
    monkeypatch.setattr(commit, "_replace_window", original)
    resumed = replay(registered, folder_plan(registered, "t-crashed", "scheduled")).history
    columns = ["batch", "status", "model_version", "drift_share", "estimated_auc",
               "realised_auc", "decision", "outcome", "new_version"]  # fmt: skip
    pd.testing.assert_frame_equal(resumed.batches[columns], reference.batches[columns])
    # The model trained at the crashed window was found and reused, not trained again.
    index_file = registered.data.simulation_dir / "t-crashed" / "models" / "versions.json"
    assert len(json.loads(index_file.read_text())["versions"]) == 1 + resumed.retrains
    assert count(registered, tables.predictions, "t-crashed") == count(
        registered, tables.predictions, "t-straight"
    )


def test_a_replay_refuses_a_model_that_has_seen_the_stream(
    registered: Settings, main_run: RunHistory
) -> None:
    registry = RegistrySlot(registered)
    trained = [v for v in registry.versions() if registry.tags(v).get("training_production")]
    assert trained, "the main run retrained at least once"
    client, name = registry.client, registered.tracking.model_name
    current = registry.champion_version()
    champion.promote(client, name, trained[-1])
    try:
        with pytest.raises(LoopError, match=r"trained on production data.*--initial-version 1"):
            build_plan(registered, "never", run="t-time-travel", what_if=True)
        with pytest.raises(LoopError, match=r"trained on production data.*--initial-version 1"):
            replay(registered, build_plan(registered, "drift", run="t-main-time-travel"))
        assert count(registered, tables.loop_runs, "t-main-time-travel") == 0  # nothing started
    finally:
        champion.promote(client, name, current)
    plan = build_plan(registered, "never", run="t-from-v1", what_if=True, initial_version="1")
    assert plan.slot.tags(plan.slot.champion_version())["copied_from"].endswith("v1")


def test_stand_in_ids_are_unique_for_repeated_rows_across_batches() -> None:
    batches = {
        1: pd.DataFrame({"sequence": [5, 7, 5, 5, 9]}),
        2: pd.DataFrame({"sequence": [9, 5]}),
    }
    ids = StandInIds(batches.__getitem__)
    repeat = 10**7
    assert ids(1).tolist() == [6, 8, 6 + repeat, 6 + 2 * repeat, 10]
    assert ids(2).tolist() == [10 + repeat, 6 + 3 * repeat]  # drawn again: new encounters
    assert StandInIds(batches.__getitem__)(2).tolist() == ids(2).tolist()  # resumed: the same
    assert encounter_id(batches[2]).tolist() == [10, 6]


def test_cli_names_bad_policy_and_missing_champion(tmp_path: Path, registered: Settings) -> None:
    runner = CliRunner()
    env = {"HEALTHPREDICT_DATA_DIR": str(registered.data.data_dir)}
    result = runner.invoke(app, ["simulate", "--policy", "sometimes"], env=env)
    assert result.exit_code == 1 and "unknown policy 'sometimes'" in result.output
    empty = {"HEALTHPREDICT_DATA_DIR": str(tmp_path / "nothing")}
    result = runner.invoke(app, ["simulate"], env=empty)
    assert result.exit_code == 1 and "error:" in result.output


def test_a_policy_can_search_before_each_retrain(registered: Settings) -> None:
    settings = registered.with_flat(tune_trials=2, tune_folds=2, tune_time_budget_seconds=300.0)
    plan = folder_plan(settings, "t-search", "scheduled")
    searching = plan.policy.model_copy(update={"search": True})
    plan = ReplayPlan(plan.run, plan.policy_name, searching, plan.scenarios, plan.stream,
                      plan.slot, False)  # fmt: skip
    history = replay(settings, plan, max_batches=2).history
    assert history.batches.loc[history.batches["batch"] == 2, "decision"].item() == "retrain"
    slot = plan.slot
    assert isinstance(slot, FolderSlot)
    version = history.batches["new_version"].dropna().item()
    searched, seeded = slot.params(version)["lightgbm"], slot.params("1")["lightgbm"]
    assert searched != seeded  # the retrain used the search's configuration


def test_the_plan_module_names_what_if_runs() -> None:
    assert plans.default_run_name("default", "never", "natural", True) == "default-never-what-if"
    assert plans.default_run_name("x", "drift", "exchangeable", False) == "control-drift"
