"""Weighted metrics against scikit-learn, and the patient-grouped bootstrap."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from healthpredict.modeling.evaluate import evaluate_predictions, patient_bootstrap_weights
from healthpredict.modeling.metrics import (
    ScoredSample,
    average_precision,
    brier,
    expected_calibration_error,
    precision_at_top,
    recall_at_top,
    roc_auc,
)


@pytest.fixture
def scored() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = (rng.random(3000) < 0.12).astype(int)
    # Rounded scores create ties, which both AUCs must handle as scikit-learn does.
    scores = np.clip(
        0.1 + 0.15 * labels * rng.random(3000) + 0.08 * rng.standard_normal(3000), 0, 1
    )
    return labels, scores.round(2)


@pytest.mark.parametrize("weighted", [False, True])
def test_metrics_equal_scikit_learn(scored: tuple[np.ndarray, np.ndarray], weighted: bool) -> None:
    labels, scores = scored
    weights = (
        np.random.default_rng(1).integers(0, 4, len(labels)).astype(float)
        if weighted
        else np.ones(len(labels))
    )
    sample = ScoredSample.build(labels, scores, 0.1)
    assert roc_auc(sample, weights) == pytest.approx(
        roc_auc_score(labels, scores, sample_weight=weights)
    )
    assert average_precision(sample, weights) == pytest.approx(
        average_precision_score(labels, scores, sample_weight=weights)
    )
    assert brier(sample, weights) == pytest.approx(
        brier_score_loss(labels, scores, sample_weight=weights)
    )


def test_calibration_error_and_top_risk_by_hand() -> None:
    labels = np.array([0, 0, 1, 1, 0, 1, 0, 0, 0, 0])
    scores = np.array([0.05, 0.05, 0.95, 0.95, 0.45, 0.55, 0.05, 0.05, 0.05, 0.05])
    sample = ScoredSample.build(labels, scores, top_fraction=0.2)
    ones = np.ones(10)
    # Bins: six 0.05 (observed 0), one 0.45 (0), one 0.55 (1), two 0.95 (1).
    expected_ece = (6 * 0.05 + 1 * 0.45 + 1 * 0.45 + 2 * 0.05) / 10
    assert expected_calibration_error(sample, ones) == pytest.approx(expected_ece)
    assert precision_at_top(sample, ones) == 1.0  # the two 0.95s
    assert recall_at_top(sample, ones) == pytest.approx(2 / 3)


def test_single_class_gives_nan_not_an_error() -> None:
    sample = ScoredSample.build(np.zeros(5), np.linspace(0, 1, 5), 0.2)
    assert np.isnan(roc_auc(sample, np.ones(5)))


def test_bootstrap_resamples_whole_patients() -> None:
    groups = pd.Series(["a", "a", "b", "c", "c", "c"])
    for weights in patient_bootstrap_weights(groups, rounds=20, seed=0):
        assert weights[0] == weights[1] and weights[3] == weights[4] == weights[5]
        assert weights[[0, 2, 3]].sum() == 3  # three patients drawn per resample


def test_report_intervals_and_subgroups(scored: tuple[np.ndarray, np.ndarray]) -> None:
    labels, scores = scored
    rng = np.random.default_rng(2)
    groups = pd.Series(rng.integers(0, 2000, len(labels)))
    attributes = pd.DataFrame(
        {
            "age": rng.choice(["[50-60)", "[60-70)"], len(labels)),
            "gender": rng.choice(["Female", "Male"], len(labels)),
            "race": rng.choice(["Asian", None], len(labels)),
        }
    )
    report = evaluate_predictions(pd.Series(labels), scores, groups, attributes, rounds=100)
    for interval in report.metrics.values():
        assert interval.low <= interval.estimate <= interval.high
    auc = report.metrics["roc_auc"]
    assert auc.estimate == pytest.approx(roc_auc_score(labels, scores))
    assert 0 < auc.high - auc.low < 0.2
    names = {(g.attribute, g.value) for g in report.subgroups}
    assert ("race", "missing") in names and ("gender", "Male") in names
    flat = report.flat_metrics()
    assert flat["test_roc_auc"] == auc.estimate and "test_pr_auc_ci_high" in flat
