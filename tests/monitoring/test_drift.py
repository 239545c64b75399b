"""The field monitor: every field watched at a calibrated rate, each kind of change caught.

The synthetic extract draws every encounter independently from one distribution, so disjoint
slices of it are exchangeable batches: any field flagged on them is a false alarm.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from healthpredict.data.schema import FEATURE_COLUMNS
from healthpredict.monitoring.drift import DriftMonitor, DriftResult, report_statistics
from healthpredict.monitoring.fields import (
    NUMERICAL,
    WATCHED,
    Check,
    FieldReference,
    Statistic,
    comparable,
    jensen_shannon,
    shape,
    wasserstein,
)
from healthpredict.monitoring.quality import record_violations
from tests.monitoring.conftest import prepared_frame

REFERENCE_ROWS, BATCH_ROWS, N_BATCHES = 4000, 500, 40
WEIGHTS = pd.Series({"age": 3.0, "time_in_hospital": 2.0, "diag_1": 1.0, "a1c_result": 1.0})


@pytest.fixture(scope="module")
def pool() -> pd.DataFrame:
    """Independent encounters: the reference, then exchangeable batches (cleaning drops some
    rows, so more are drawn than needed)."""
    frame = prepared_frame(int((REFERENCE_ROWS + BATCH_ROWS * (N_BATCHES + 1)) * 1.2), seed=11)
    assert len(frame) >= REFERENCE_ROWS + BATCH_ROWS * (N_BATCHES + 1)
    return frame


@pytest.fixture(scope="module")
def reference(pool: pd.DataFrame) -> pd.DataFrame:
    return pool.iloc[:REFERENCE_ROWS].reset_index(drop=True)


@pytest.fixture(scope="module")
def monitor(reference: pd.DataFrame) -> DriftMonitor:
    return DriftMonitor(reference, risks(reference), WEIGHTS / WEIGHTS.sum(), 0.05, 0.1)


def batches(pool: pd.DataFrame) -> list[pd.DataFrame]:
    rest = pool.iloc[REFERENCE_ROWS:].reset_index(drop=True)
    return [rest.iloc[i * BATCH_ROWS : (i + 1) * BATCH_ROWS] for i in range(N_BATCHES)]


def fresh(pool: pd.DataFrame) -> pd.DataFrame:
    """A batch none of the control batches holds."""
    return pool.iloc[-BATCH_ROWS:].reset_index(drop=True)


def risks(frame: pd.DataFrame) -> np.ndarray:
    return np.clip(0.05 + 0.02 * frame["number_inpatient"].to_numpy(), 0.001, 0.999)


def flagged(result: DriftResult, field: str) -> set[Check]:
    """The checks that fired on ``field``."""
    found = next(f for f in result.features if f.feature == field)
    return {finding.check for finding in found.findings}


def test_every_contract_field_is_watched_with_a_statistic_for_its_type() -> None:
    assert [f.name for f in WATCHED] == list(FEATURE_COLUMNS)
    kinds = {f.name: f.statistic for f in WATCHED}
    assert kinds["num_lab_procedures"] is Statistic.WASSERSTEIN
    assert kinds["diag_1"] is kinds["admission_type_id"] is Statistic.JENSEN_SHANNON
    assert "admission_type_id" not in NUMERICAL  # a code, not a quantity


def test_the_family_wise_false_alarm_rate_is_calibrated(
    monitor: DriftMonitor, pool: pd.DataFrame
) -> None:
    alarmed = [bool(monitor.run(b, risks(b)).drifted) for b in batches(pool)]
    # At 5 %, 40 batches alarm at most 6 times with probability 0.999; uncalibrated thresholds
    # (a fixed effect size, or each field at 5 %) alarm on most batches of 500 rows.
    assert sum(alarmed) <= 6, f"{sum(alarmed)} of {len(alarmed)} exchangeable batches alarmed"


def test_the_level_is_shared_among_every_check(reference: pd.DataFrame) -> None:
    fields = FieldReference(reference, 0.05)
    calibration = fields.calibration(BATCH_ROWS)
    assert 1 - (1 - calibration.share) ** fields.n_checks(BATCH_ROWS) == pytest.approx(0.05)
    loose = FieldReference(reference, 0.2).calibration(BATCH_ROWS)
    assert all(
        loose.nulls[name].statistic <= null.statistic + 1e-12
        for name, null in calibration.nulls.items()
    )


def test_the_calibration_statistics_are_evidently_s(pool: pd.DataFrame) -> None:
    """Calibration redraws counts and computes the statistics itself: they must be the ones
    Evidently reports on the same data, or the thresholds would be for another statistic."""
    reference, batch = comparable(pool.iloc[:3000]), comparable(pool.iloc[3000:3700])
    names = ["time_in_hospital", "diag_1", "num_lab_procedures", "race"]
    methods = {n: (next(f.statistic.value for f in WATCHED if f.name == n), 0.1) for n in names}
    theirs = report_statistics(batch[names], reference[names], methods, None)
    for name in names:
        keys = sorted(set(reference[name]) | set(batch[name]))
        ours_counts = reference[name].value_counts().reindex(keys, fill_value=0).to_numpy(float)
        batch_counts = batch[name].value_counts().reindex(keys, fill_value=0).to_numpy(float)
        if name in NUMERICAL:
            ours = wasserstein(np.array(keys, dtype=float), ours_counts, batch_counts)
        else:
            ours = jensen_shannon(ours_counts, batch_counts)
        assert float(ours) == pytest.approx(theirs[name], abs=1e-9)


def test_a_proportion_change_of_a_category(monitor: DriftMonitor, pool: pd.DataFrame) -> None:
    batch = fresh(pool)
    batch.loc[batch.index[:75], "a1c_result"] = ">7"  # a value the synthetic extract never has
    batch.loc[batch.index[75:175], "age"] = "[90-100)"
    result = monitor.run(batch, risks(batch))
    assert Check.DISTRIBUTION in flagged(result, "age")
    assert Check.NEW_VALUES in flagged(result, "a1c_result")


def test_a_location_change_of_a_count(monitor: DriftMonitor, pool: pd.DataFrame) -> None:
    batch = fresh(pool).assign(num_lab_procedures=lambda f: f["num_lab_procedures"] + 8)
    assert Check.DISTRIBUTION in flagged(monitor.run(batch, risks(batch)), "num_lab_procedures")


def test_new_codes_are_quality_drift_with_examples(
    monitor: DriftMonitor, pool: pd.DataFrame
) -> None:
    batch = fresh(pool)
    batch.loc[batch.index[:40], "diag_3"] = "996.81"
    result = monitor.run(batch, risks(batch))
    finding = next(f for f in result.features if f.feature == "diag_3").findings
    new = [f for f in finding if f.check is Check.NEW_VALUES]
    assert new and "'996.81' x40" in new[0].detail


def test_a_format_change_the_contract_accepts(monitor: DriftMonitor, pool: pd.DataFrame) -> None:
    batch = fresh(pool)
    specialty = batch["medical_specialty"].str.lower().str.replace("-", " ")
    batch["medical_specialty"] = specialty.where(batch.index < 150, batch["medical_specialty"])
    assert not record_violations(batch)
    result = monitor.run(batch, risks(batch))
    found = next(f for f in result.features if f.feature == "medical_specialty").findings
    detail = next(f.detail for f in found if f.check is Check.FORMAT)
    assert "'surgery general' (a a)" in detail or "(a)" in detail


def test_a_field_going_empty_is_missingness(monitor: DriftMonitor, pool: pd.DataFrame) -> None:
    batch = fresh(pool)
    batch.loc[batch.index[:100], "payer_code"] = None
    assert Check.MISSINGNESS in flagged(monitor.run(batch, risks(batch)), "payer_code")


def test_a_collapse_of_distinct_values_is_cardinality(reference: pd.DataFrame) -> None:
    fields = FieldReference(reference, 0.05)
    field = fields.fields["num_lab_procedures"]
    assert Check.CARDINALITY in field.checks(BATCH_ROWS)
    low, _ = fields.calibration(BATCH_ROWS).nulls["num_lab_procedures"].cardinality_band or (0, 0)
    assert low > 10  # a batch taking ten values is flagged


def test_shape_says_how_a_value_is_written() -> None:
    assert shape("250.01") == "999.99"
    assert shape("Surgery-General") == "Aa-Aa"
    assert shape("V57") == "A99"


def test_the_report_shows_the_fields_off_the_reference(
    monitor: DriftMonitor, pool: pd.DataFrame, tmp_path: Path
) -> None:
    batch = fresh(pool).assign(time_in_hospital=lambda f: (f["time_in_hospital"] + 3).clip(1, 14))
    html = tmp_path / "batch.html"
    result = monitor.run(batch, risks(batch), html)
    assert result.drifted[0].feature == "time_in_hospital"
    assert html.stat().st_size > 10_000 and html.with_name("batch_predictions.html").is_file()
    assert "time_in_hospital" in html.read_text()


def test_count_bands_hold_their_share() -> None:
    """The beta-binomial band of a count: about ``share`` of exchangeable batches fall out."""
    from healthpredict.monitoring.fields import count_band

    rng = np.random.default_rng(0)
    low, high = count_band(400, 4000, 500, 0.05)
    truth = rng.beta(400.5, 3600.5, 4000)
    counts = rng.binomial(500, truth)
    outside = np.mean((counts < low) | (counts > high))
    assert outside <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 4000)
    assert stats.binom.cdf(high, 500, 0.1) > 0.95
