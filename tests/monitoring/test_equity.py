"""Equity over time: per-group figures, their intervals, pooling, the alarm, and the loop's rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from sklearn.metrics import roc_auc_score
from sqlalchemy import insert

from healthpredict.data.schema import AGE_BANDS
from healthpredict.loop.commit import commit_phase
from healthpredict.loop.context import LoopContext
from healthpredict.loop.monitor import monitor
from healthpredict.loop.windows import WindowClock
from healthpredict.modeling.bootstrap import (
    patient_bootstrap_matrix,
    patient_bootstrap_weights,
    roc_auc_rounds,
)
from healthpredict.modeling.groups import GroupAttributeError, pool_groups
from healthpredict.modeling.metrics import ScoredSample, roc_auc
from healthpredict.monitoring.equity import (
    GROUP_HISTORY_COLUMNS,
    EquityRules,
    measure_equity,
    read_group_history,
)
from healthpredict.monitoring.policy import load_policies
from healthpredict.monitoring.store import make_engine
from healthpredict.monitoring.tables import create_schema, outcomes, predictions
from healthpredict.settings import Settings

# Age bands in the extract's proportions (per 1,000 encounters), so small bands pool as they do.
AGE_SHARES = np.array([2, 7, 16, 37, 95, 170, 221, 256, 169, 27], dtype=float)
RULES = EquityRules(rounds=200, min_encounters=200, min_positives=20)


def window_frame(n: int, seed: int, shuffled_band: str | None = None) -> pd.DataFrame:
    """Encounters with a calibrated model's risks (patients with one to three encounters), and
    optionally one age band whose outcomes are shuffled: its rate kept, its ranking lost."""
    rng = np.random.default_rng(seed)
    patients = rng.integers(0, int(n * 0.6), n)
    patient_age = rng.choice(AGE_BANDS, patients.max() + 1, p=AGE_SHARES / AGE_SHARES.sum())
    race = rng.choice(
        ["Caucasian", "AfricanAmerican", "Hispanic", "Asian", "Other", None],
        patients.max() + 1,
        p=[0.74, 0.19, 0.02, 0.006, 0.014, 0.03],
    )
    gender = rng.choice(["Female", "Male"], patients.max() + 1)
    risk = np.clip(rng.beta(2.0, 14.0, n), 0.005, 0.95).round(3)
    frame = pd.DataFrame(
        {
            "patient": patients,
            "age": patient_age[patients],
            "gender": gender[patients],
            "race": race[patients],
            "probability": risk,
            "label": (rng.random(n) < risk).astype(int),
        }
    )
    if shuffled_band is not None:
        band = np.flatnonzero(frame["age"].to_numpy() == shuffled_band)
        frame.loc[band, "label"] = rng.permutation(frame.loc[band, "label"].to_numpy())
    return frame


def measure(frame: pd.DataFrame, rules: EquityRules = RULES, patients: str = "patient"):
    return measure_equity(
        frame["label"].to_numpy(),
        frame["probability"].to_numpy(),
        frame[patients].to_numpy(),
        frame[["age", "gender", "race"]],
        rules,
    )


def by_name(report) -> dict[tuple[str, str], object]:
    return {(g.attribute, g.group): g for g in [report.overall, *report.groups]}


def test_the_vectorised_auc_equals_the_metric_round_by_round() -> None:
    frame = window_frame(3000, seed=1)
    y, p = frame["label"].to_numpy(), frame["probability"].to_numpy()  # rounded: many ties
    matrix = patient_bootstrap_matrix(frame["patient"], 30, seed=4)
    sample = ScoredSample.build(y, p, 0.1)
    expected = [roc_auc(sample, w) for w in patient_bootstrap_weights(frame["patient"], 30, 4)]
    assert np.allclose(roc_auc_rounds(matrix, y, p), expected, atol=1e-12)
    assert roc_auc_rounds(np.ones((len(y), 1)), y, p)[0] == pytest.approx(roc_auc_score(y, p))
    assert np.isnan(roc_auc_rounds(np.ones((3, 1)), np.zeros(3), np.array([0.1, 0.2, 0.3])))


def test_each_groups_figures_are_its_own_rows_figures() -> None:
    frame = window_frame(6000, seed=2)
    groups = by_name(measure(frame))
    female = frame[frame["gender"] == "Female"]
    figures = groups[("gender", "Female")]
    assert figures.n_encounters == len(female)
    assert figures.n_patients == female["patient"].nunique()
    assert figures.roc_auc.estimate == pytest.approx(
        roc_auc_score(female["label"], female["probability"])
    )
    assert figures.calibration_gap.estimate == pytest.approx(
        (female["label"] - female["probability"]).mean()
    )
    assert figures.flagged_share.estimate == pytest.approx((female["probability"] >= 0.25).mean())
    overall = groups[("all", "all")]
    assert figures.auc_vs_all.estimate == pytest.approx(
        figures.roc_auc.estimate - overall.roc_auc.estimate
    )
    for interval in (figures.roc_auc, figures.calibration_gap, figures.flagged_share):
        assert interval.low < interval.estimate < interval.high


def test_the_intervals_cover_the_truth_about_as_often_as_they_claim() -> None:
    truth = window_frame(400_000, seed=99)
    band = truth[truth["age"] == "[70-80)"]
    true_auc = roc_auc_score(band["label"], band["probability"])
    covered_auc, covered_gap = [], []
    for seed in range(40):
        figures = by_name(measure(window_frame(3000, seed=100 + seed)))[("age", "[70-80)")]
        covered_auc.append(figures.roc_auc.low <= true_auc <= figures.roc_auc.high)
        covered_gap.append(figures.calibration_gap.low <= 0.0 <= figures.calibration_gap.high)
    # 95 % intervals: 40 draws land at or above 34 covered with probability above 99 %.
    assert np.mean(covered_auc) >= 0.85
    assert np.mean(covered_gap) >= 0.85


def test_a_patient_counted_twice_adds_no_information() -> None:
    frame = window_frame(3000, seed=3)
    twice = pd.concat([frame, frame], ignore_index=True)  # every encounter logged twice
    once, doubled = by_name(measure(frame)), by_name(measure(twice))
    key = ("age", "[70-80)")
    for name in ("roc_auc", "calibration_gap", "flagged_share", "auc_vs_all"):
        assert getattr(doubled[key], name).estimate == pytest.approx(
            getattr(once[key], name).estimate
        )
        # Resampling patients: the same draws, the same intervals (no false precision).
        assert getattr(doubled[key], name).low == pytest.approx(getattr(once[key], name).low)
        assert getattr(doubled[key], name).high == pytest.approx(getattr(once[key], name).high)
    # Resampling rows instead would have narrowed them: the check above can fail.
    twice["row"] = np.arange(len(twice))
    by_row = by_name(measure(twice, patients="row"))[key].roc_auc
    assert by_row.high - by_row.low < 0.85 * (once[key].roc_auc.high - once[key].roc_auc.low)


def test_small_groups_are_pooled_or_too_few_to_tell() -> None:
    frame = window_frame(5000, seed=4)
    frame.loc[:2, "gender"] = "Unknown/Invalid"  # three encounters
    groups = by_name(measure(frame))
    ages = [name for attribute, name in groups if attribute == "age"]
    assert ages[0].startswith("[0-") and ages[0] != "[0-10)"  # the young bands pooled
    assert ages[-1].endswith("-100)") and "[90-100)" not in ages  # the oldest joins its neighbour
    pooled = groups[("age", ages[0])]
    assert pooled.members[0] == "[0-10)" and pooled.n_encounters >= RULES.min_encounters
    assert pooled.status != "too few"
    other = [g for (a, n), g in groups.items() if a == "race" and n.startswith("other (")]
    assert other and set(other[0].members) >= {"Asian", "Other"}
    unknown = groups[("gender", "Unknown/Invalid")]
    assert unknown.status == "too few" and unknown.n_encounters == 3
    assert np.isnan(unknown.roc_auc.estimate) and not unknown.alarms


def test_pooling_runs_of_ordered_values() -> None:
    values = np.array(["[0-10)"] * 6 + ["[10-20)"] * 6 + ["[20-30)"] * 30 + ["[30-40)"] * 4)
    labels = np.tile([0, 1], len(values) // 2)
    groups = pool_groups(values, labels, "age", min_encounters=20, min_positives=5)
    # 0-30 reaches the size; 30-40 alone cannot and joins it: one band, still a band.
    assert [(g.name, g.enough) for g in groups] == [("[0-40)", True)]
    assert groups[0].members == ("[0-10)", "[10-20)", "[20-30)", "[30-40)")
    alone = pool_groups(values[:6], labels[:6], "age", min_encounters=20, min_positives=5)
    assert [(g.name, g.enough) for g in alone] == [("[0-10)", False)]


def test_one_degraded_group_raises_an_alarm_naming_it() -> None:
    report = measure(window_frame(10_000, seed=5, shuffled_band="[70-80)"))
    assert report.alarms, "a band whose outcomes no longer follow the risks must alarm"
    assert all("age [70-80)" in alarm for alarm in report.alarms)
    assert "ROC-AUC" in report.alarms[0] and "surely beyond -0.050" in report.alarms[0]
    band = by_name(report)[("age", "[70-80)")]
    assert band.status == "alarm" and band.auc_vs_all.high < -RULES.auc_margin


def test_the_exchangeable_control_raises_no_alarm() -> None:
    alarms = [
        alarm for seed in range(12) for alarm in measure(window_frame(10_000, 200 + seed)).alarms
    ]
    assert alarms == []


def test_bad_rules_are_refused_with_the_problem_named(tmp_path: Path) -> None:
    with pytest.raises(GroupAttributeError, match="'zip' is not a contract column"):
        EquityRules(attributes=("age", "zip"))
    with pytest.raises(ValueError, match="auc_margin must lie in"):
        EquityRules(auc_margin=0.0)
    with pytest.raises(ValidationError, match="equity_attributes: group attribute 'zip'"):
        Settings.from_flat(data_dir=tmp_path, equity_attributes=["zip"])
    with pytest.raises(ValidationError, match="equity_calibration_margin"):
        Settings.from_flat(data_dir=tmp_path, equity_calibration_margin=0.9)


def test_the_monitor_records_group_rows_and_names_a_group_alarm(tmp_path: Path) -> None:
    """The loop's monitor phase on a store filled by hand: window 2 (nothing served) measures
    the outcomes of window 1, per group, and the commit writes them for the dashboard's view."""
    settings = Settings.from_flat(data_dir=tmp_path, bootstrap_rounds=200, seed=1)
    engine = make_engine(settings.monitoring_url)
    create_schema(engine)
    frame = window_frame(6000, seed=6, shuffled_band="[70-80)")
    clock = WindowClock.from_settings(settings.monitoring)
    _log_window(engine, frame, clock.window(1).start)
    context = LoopContext(
        settings=settings,
        engine=engine,
        deployment="production",
        clock=clock,
        policy_name="drift",
        policy=load_policies(None)["drift"],
        slot=None,  # type: ignore[arg-type]  # the measurement of outcomes needs no model
        initial_data=pd.DataFrame,
        owns_champion=False,
    )
    pending = monitor(context, clock.window(2), champion="3")
    assert "equity: age [70-80)" in pending.text
    [performance] = pending.rows.performance
    assert any(alarm.startswith("equity: age [70-80)") for alarm in performance["alarms"])
    commit_phase(context, pending)
    history = read_group_history(engine, "production")
    assert list(history.columns) == list(GROUP_HISTORY_COLUMNS)
    assert set(history["window"]) == {1} and set(history["version"]) == {"3"}
    assert history.iloc[0]["attribute"] == "all" and history.iloc[0]["n"] == len(frame)
    band = history[(history["attribute"] == "age") & (history["group"] == "[70-80)")].iloc[0]
    assert band["status"] == "alarm" and band["auc_high"] < history.iloc[0]["auc"]
    assert band["n"] == (frame["age"] == "[70-80)").sum()
    assert set(history["attribute"]) == {"all", "age", "gender", "race"}
    commit_phase(context, monitor(context, clock.window(2), champion="3"))  # again: replaced
    assert len(read_group_history(engine, "production")) == len(history)
    engine.dispose()


def _log_window(engine, frame: pd.DataFrame, start: datetime) -> None:
    """The service's rows for ``frame``'s encounters (at one-minute steps), and their outcomes."""
    now = datetime.now(UTC)
    rows, known = [], []
    for i, record in enumerate(frame.to_dict("records")):
        key = f"e{i}"
        rows.append(
            {
                "deployment": "production",
                "request_id": "r",
                "position": i,
                "created_at": now,
                "occurred_at": start + timedelta(minutes=i),
                "model_name": "m",
                "model_version": "3",
                "probability": record["probability"],
                "risk_band": "low",
                "decision": record["probability"] >= 0.25,
                "features": {k: record[k] for k in ("age", "gender", "race")},
                "patient_key": f"p{record['patient']}",
                "encounter_key": key,
            }
        )
        known.append(
            {
                "deployment": "production",
                "encounter_key": key,
                "readmitted_30d": bool(record["label"]),
                "reported_as": "<30" if record["label"] else "NO",
                "source": "test",
                "received_at": now,
            }
        )
    with engine.begin() as connection:
        connection.execute(insert(predictions), rows)
        connection.execute(insert(outcomes), known)
