"""The label-free AUC estimate and the realised measurements behind the concept-drift alarm."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from healthpredict.monitoring.performance import estimated_auc, realised_performance


def test_estimate_is_the_expected_auc_of_a_calibrated_model() -> None:
    rng = np.random.default_rng(0)
    p = rng.beta(1.2, 8, 4000)
    draws = [roc_auc_score(rng.random(len(p)) < p, p) for _ in range(200)]
    assert estimated_auc(p) == pytest.approx(np.mean(draws), abs=0.005)


def test_no_shortfall_when_the_relation_holds_and_a_clear_one_when_it_breaks() -> None:
    rng = np.random.default_rng(1)
    p = rng.beta(1.2, 8, 6000)
    patients = np.arange(len(p))
    calibrated = realised_performance(rng.random(len(p)) < p, p, patients, 200, 0.95, 0)
    assert calibrated.auc_shortfall.low < 0 < calibrated.auc_shortfall.high
    assert calibrated.calibration_gap.low < 0 < calibrated.calibration_gap.high
    broken = realised_performance(rng.random(len(p)) < p.mean(), p, patients, 200, 0.95, 0)
    assert broken.auc_shortfall.high < -0.1


def test_a_higher_observed_rate_shows_as_a_calibration_gap() -> None:
    rng = np.random.default_rng(2)
    p = rng.beta(1.2, 8, 6000)
    result = realised_performance(rng.random(len(p)) < 1.6 * p, p, np.arange(len(p)), 200, 0.95, 0)
    assert result.calibration_gap.low > 0.03
    assert result.observed_rate > result.predicted_rate
