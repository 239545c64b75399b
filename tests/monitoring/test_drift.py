"""Evidently-backed drift monitor: quiet on exchangeable data, loud on shifted data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from healthpredict.monitoring.drift import DriftMonitor, DriftThresholds, monitored_fields
from healthpredict.monitoring.scenarios import ScenarioSet, inject

THRESHOLDS = DriftThresholds(feature=0.1, share=0.9, single=0.25, prediction=0.1)
WEIGHTS = pd.Series({"age": 3.0, "time_in_hospital": 2.0, "diag_1": 1.0, "a1c_result": 1.0})


@pytest.fixture(scope="module")
def halves(batch: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    shuffled = batch.sample(frac=1.0, random_state=0).reset_index(drop=True)
    middle = len(shuffled) // 2
    return shuffled.iloc[:middle], shuffled.iloc[middle:].reset_index(drop=True)


def risks(frame: pd.DataFrame, shift: float = 0.0) -> np.ndarray:
    base = 0.05 + 0.02 * frame["number_inpatient"].to_numpy() + shift
    return np.clip(base, 0.001, 0.999)


def monitor(reference: pd.DataFrame) -> DriftMonitor:
    return DriftMonitor(reference, risks(reference), monitored_fields(WEIGHTS, 4), THRESHOLDS)


def test_monitored_fields_keep_request_fields_by_importance() -> None:
    importance = pd.Series({"prior_visits": 9.0, "age": 3.0, "diag_1": 1.0, "race": 0.0})
    fields = monitored_fields(importance, 5)
    assert list(fields.index) == ["age", "diag_1"]
    assert fields.sum() == pytest.approx(1.0)


def test_no_drift_between_random_halves(halves: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    reference, current = halves
    result = monitor(reference).run(current, risks(current))
    assert not result.dataset_drift and not result.prediction_drift
    assert result.n_drifted == 0 and result.drift_share == 0.0
    assert all(f.statistic < 0.05 for f in result.features)


def test_covariate_shift_is_flagged_per_feature_and_for_the_dataset(
    halves: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    reference, current = halves
    older = ScenarioSet.model_validate(
        {"name": "t", "scenarios": [{"name": "o", "kind": "covariate_shift", "start": 1,
                                     "old_share": 0.9, "extra_days": 4}]}
    )  # fmt: skip
    shifted, _ = inject(current, older, 1, 0)
    html = tmp_path / "batch.html"
    result = monitor(reference).run(shifted, risks(shifted, shift=0.1), html)
    assert {"age", "time_in_hospital"} <= set(result.drifted_features)
    assert result.dataset_drift  # by the single-field rule: the share is below 0.9
    assert result.drift_share >= 5 / 7 - 1e-9
    assert result.prediction_drift
    assert html.stat().st_size > 10_000 and html.with_name("batch_predictions.html").is_file()


def test_a_field_going_empty_is_drift(halves: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    reference, current = halves
    result = monitor(reference).run(current.assign(a1c_result=None), risks(current))
    assert "a1c_result" in result.drifted_features
