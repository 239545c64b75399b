"""Each scenario kind changes the batch (features and labels) the way its definition says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from healthpredict.data.prepare import TARGET
from healthpredict.monitoring.scenarios import (
    ScenarioError,
    ScenarioSet,
    inject,
    load_scenarios,
)

OLD = ["[70-80)", "[80-90)", "[90-100)"]


def one(**scenario: object) -> ScenarioSet:
    return ScenarioSet.model_validate({"name": "test", "scenarios": [{"name": "s", **scenario}]})


def test_covariate_shift_makes_the_batch_older_with_longer_stays(batch: pd.DataFrame) -> None:
    scenarios = one(kind="covariate_shift", start=1, old_share=0.8, extra_days=3)
    shifted, [record] = inject(batch, scenarios, 1, seed=0)
    assert len(shifted) == len(batch)
    assert batch["age"].isin(OLD).mean() < 0.5 < 0.75 < shifted["age"].isin(OLD).mean()
    assert shifted["time_in_hospital"].max() <= 14
    assert shifted["time_in_hospital"].mean() > batch["time_in_hospital"].mean() + 2
    assert record.kind == "covariate_shift" and record.rows_changed == len(batch)


def test_prior_shift_changes_the_rate_but_keeps_each_class_profile(batch: pd.DataFrame) -> None:
    shifted, [record] = inject(batch, one(kind="prior_shift", start=1, rate_factor=2.0), 1, 0)
    assert record.prevalence_after == pytest.approx(2 * record.prevalence_before, rel=0.1)
    assert shifted[TARGET].mean() == pytest.approx(record.prevalence_after)
    positives_before = batch.loc[batch[TARGET] == 1, "number_inpatient"].mean()
    positives_after = shifted.loc[shifted[TARGET] == 1, "number_inpatient"].mean()
    assert positives_after == pytest.approx(positives_before, rel=0.15)


def test_concept_drift_relabels_only_the_subgroup(batch: pd.DataFrame) -> None:
    scenarios = one(
        kind="concept_drift",
        start=1,
        subgroup={"column": "number_inpatient", "op": ">=", "value": 1},
        positive_rate=0.0,
    )
    drifted, [record] = inject(batch, scenarios, 1, 0)
    members = batch["number_inpatient"] >= 1
    assert drifted.loc[members, TARGET].sum() == 0
    assert drifted.loc[~members, TARGET].equals(batch.loc[~members, TARGET])
    assert drifted.drop(columns=[TARGET]).equals(batch.drop(columns=[TARGET]))
    assert record.labels_changed == int(batch.loc[members, TARGET].sum()) > 0
    assert drifted[TARGET].dtype == batch[TARGET].dtype


@pytest.mark.parametrize(
    ("fault", "extra", "check"),
    [
        ("drop", {}, lambda f: "a1c_result" not in f.columns),
        ("null", {}, lambda f: f["a1c_result"].isna().all()),
        ("recode", {"mapping": {"Norm": "NORMAL"}}, lambda f: "Norm" not in set(f["a1c_result"])),
    ],
)
def test_data_quality_faults(batch: pd.DataFrame, fault: str, extra: dict, check: object) -> None:
    faulty, _ = inject(batch, one(kind="data_quality", start=1, column="a1c_result", fault=fault,
                                  **extra), 1, 0)  # fmt: skip
    assert check(faulty)  # type: ignore[operator]
    assert faulty[TARGET].equals(batch[TARGET])


def test_unit_change_rescales_a_count(batch: pd.DataFrame) -> None:
    scenarios = one(kind="data_quality", start=1, column="time_in_hospital", fault="scale")
    faulty, _ = inject(batch, scenarios, 1, 0)
    assert (faulty["time_in_hospital"] == batch["time_in_hospital"] * 24).all()


def test_scenarios_apply_only_to_their_batches_and_are_repeatable(batch: pd.DataFrame) -> None:
    scenarios = one(kind="prior_shift", start=2, end=3, rate_factor=1.5)
    assert inject(batch, scenarios, 1, 0)[1] == []
    assert inject(batch, scenarios, 4, 0)[1] == []
    first, second = inject(batch, scenarios, 3, 7)[0], inject(batch, scenarios, 3, 7)[0]
    assert first.equals(second)


def test_the_packaged_set_has_one_scenario_of_each_kind() -> None:
    kinds = {s.kind for s in load_scenarios(None).scenarios}
    assert kinds == {"covariate_shift", "prior_shift", "concept_drift", "data_quality"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\nscenarios: [{name: a, kind: teleport, start: 1}]", "schema"),
        ("name: x\nscenarios: [{name: a, kind: prior_shift, start: 3, end: 2, rate_factor: 2}]",
         "before start"),
        ("name: x\nscenarios: [{name: a, kind: data_quality, start: 1, column: nope, "
         "fault: drop}]", "unknown column"),
        ("name: [unclosed", "not valid YAML"),
    ],
)  # fmt: skip
def test_bad_scenario_files_are_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioError, match=message):
        load_scenarios(path)


def test_missing_scenario_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="does not exist"):
        load_scenarios(tmp_path / "nope.yaml")


def test_resampling_keeps_time_order(batch: pd.DataFrame) -> None:
    shifted, _ = inject(batch, one(kind="prior_shift", start=1, rate_factor=1.5), 1, 0)
    assert np.all(np.diff(shifted["sequence"].to_numpy()) >= 0)


def test_outcome_shuffle_degrades_one_group_and_keeps_its_rate(batch: pd.DataFrame) -> None:
    band = ["[60-70)"]
    subgroup = {"column": "age", "op": "in", "value": band}
    scenarios = one(kind="outcome_shuffle", start=1, subgroup=subgroup)
    shuffled, [record] = inject(batch, scenarios, 1, seed=0)
    members = batch["age"].isin(band).to_numpy()
    assert record.rows_changed == members.sum() and record.labels_changed > 0
    assert shuffled.loc[members, TARGET].sum() == batch.loc[members, TARGET].sum()  # rate kept
    pd.testing.assert_frame_equal(shuffled[~members], batch[~members])  # no one else touched
    pd.testing.assert_frame_equal(shuffled.drop(columns=[TARGET]), batch.drop(columns=[TARGET]))


def test_the_one_group_scenario_set_is_packaged() -> None:
    from importlib import resources

    path = resources.files("healthpredict.monitoring").joinpath("scenarios/one-group.yaml")
    [scenario] = load_scenarios(Path(str(path))).scenarios
    assert scenario.kind == "outcome_shuffle" and scenario.start == 3
