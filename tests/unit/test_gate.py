"""The promotion gate's statistics and rules, on synthetic scores."""

from __future__ import annotations

import numpy as np
import pytest

from healthpredict.modeling.gate import GatePolicy, compare, verdict

POLICY = GatePolicy(min_auc_gain=0.005, loss_tolerance=0.0, max_ece_increase=0.01, rounds=300)


@pytest.fixture
def outcome() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    labels = (rng.random(6000) < 0.12).astype(float)
    signal = labels + rng.normal(0, 1.2, len(labels))
    groups = rng.integers(0, 4500, len(labels))
    return labels, signal, groups


def _probabilities(score: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-(score - 2.2)))


def test_clearly_better_challenger_is_promoted(outcome: tuple[np.ndarray, ...]) -> None:
    labels, signal, groups = outcome
    noisy = signal + np.random.default_rng(1).normal(0, 1.5, len(labels))
    comparison = compare(labels, _probabilities(noisy), _probabilities(signal), groups, POLICY)
    promote, reason = verdict(comparison, POLICY)
    assert comparison.auc_gain.low > 0.02
    assert comparison.challenger_roc_auc > comparison.champion_roc_auc
    assert promote and "reaches the margin" in reason


def test_clearly_worse_challenger_is_refused(outcome: tuple[np.ndarray, ...]) -> None:
    labels, signal, groups = outcome
    noisy = signal + np.random.default_rng(1).normal(0, 1.5, len(labels))
    comparison = compare(labels, _probabilities(signal), _probabilities(noisy), groups, POLICY)
    promote, reason = verdict(comparison, POLICY)
    assert comparison.auc_gain.high < 0
    assert not promote and "below the required margin" in reason


def test_indistinguishable_challenger_is_refused(outcome: tuple[np.ndarray, ...]) -> None:
    labels, signal, groups = outcome
    # A tiny perturbation: gain inside the noise, even if its point estimate is positive.
    jitter = signal + np.random.default_rng(3).normal(0, 0.05, len(labels))
    lenient = GatePolicy(min_auc_gain=0.0, loss_tolerance=0.0, max_ece_increase=0.01, rounds=300)
    comparison = compare(labels, _probabilities(signal), _probabilities(jitter), groups, lenient)
    assert comparison.auc_gain.low < 0 < comparison.auc_gain.high
    promote, reason = verdict(comparison, lenient)
    assert not promote and ("not shown to be better" in reason or "below" in reason)


def test_worse_calibration_blocks_promotion(outcome: tuple[np.ndarray, ...]) -> None:
    labels, signal, groups = outcome
    noisy = signal + np.random.default_rng(1).normal(0, 1.5, len(labels))
    overconfident = np.clip(_probabilities(signal) * 2.5, 0, 1)  # same ranking, bad risks
    comparison = compare(labels, _probabilities(noisy), overconfident, groups, POLICY)
    promote, reason = verdict(comparison, POLICY)
    assert comparison.auc_gain.low > 0
    assert not promote and "calibration error rises" in reason


def test_the_bootstrap_is_paired(outcome: tuple[np.ndarray, ...]) -> None:
    labels, signal, groups = outcome
    same = _probabilities(signal)
    comparison = compare(labels, same, same.copy(), groups, POLICY)
    # Identical models: every paired resample gives exactly zero difference.
    assert comparison.auc_gain.low == comparison.auc_gain.high == 0.0
