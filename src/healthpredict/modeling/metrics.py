"""Weighted classification metrics that a bootstrap can evaluate hundreds of times quickly.

A patient-grouped bootstrap resamples patients, which amounts to integer weights on rows. Every
metric here takes those weights, and the scores are reduced once to their distinct levels, so
one evaluation is a few ``bincount`` calls. With unit weights each metric equals scikit-learn's
(``roc_auc_score``, ``average_precision_score``, ``brier_score_loss``); the tests check that.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

CALIBRATION_BINS = 10


@dataclass(frozen=True)
class ScoredSample:
    """Labels and scores, pre-reduced for fast weighted metrics."""

    labels: np.ndarray
    scores: np.ndarray
    level_index: np.ndarray
    n_levels: int
    bin_index: np.ndarray
    flagged: np.ndarray

    @classmethod
    def build(cls, labels: np.ndarray, scores: np.ndarray, top_fraction: float) -> ScoredSample:
        """Reduce ``scores`` to ascending distinct levels and flag the top ``top_fraction``."""
        labels = np.asarray(labels, dtype=float)
        scores = np.asarray(scores, dtype=float)
        levels, level_index = np.unique(scores, return_inverse=True)
        edges = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)[1:-1]
        flagged = np.zeros(len(scores), dtype=bool)
        n_flagged = max(1, round(len(scores) * top_fraction))
        flagged[np.argsort(-scores, kind="stable")[:n_flagged]] = True
        return cls(labels, scores, level_index, len(levels), np.digitize(scores, edges), flagged)


WeightedMetric = Callable[[ScoredSample, np.ndarray], float]


def _class_weights_by_level(sample: ScoredSample, weights: np.ndarray) -> tuple[np.ndarray, ...]:
    positive = np.bincount(sample.level_index, weights * sample.labels, sample.n_levels)
    negative = np.bincount(sample.level_index, weights * (1 - sample.labels), sample.n_levels)
    return positive, negative


def roc_auc(sample: ScoredSample, weights: np.ndarray) -> float:
    """Area under the ROC curve; ties count one half."""
    positive, negative = _class_weights_by_level(sample, weights)
    total_pos, total_neg = positive.sum(), negative.sum()
    if total_pos == 0 or total_neg == 0:
        return float("nan")
    negatives_below = np.cumsum(negative) - negative
    return float(np.sum(positive * (negatives_below + 0.5 * negative)) / (total_pos * total_neg))


def average_precision(sample: ScoredSample, weights: np.ndarray) -> float:
    """PR-AUC as average precision (step-wise, as scikit-learn computes it)."""
    positive, negative = _class_weights_by_level(sample, weights)
    total_pos = positive.sum()
    if total_pos == 0:
        return float("nan")
    true_pos = np.cumsum(positive[::-1])
    false_pos = np.cumsum(negative[::-1])
    precision = true_pos / np.maximum(true_pos + false_pos, 1e-12)
    recall_gain = positive[::-1] / total_pos
    return float(np.sum(recall_gain * precision))


def brier(sample: ScoredSample, weights: np.ndarray) -> float:
    """Mean squared error of the probabilities."""
    return float(np.sum(weights * (sample.scores - sample.labels) ** 2) / np.sum(weights))


def expected_calibration_error(sample: ScoredSample, weights: np.ndarray) -> float:
    """Weighted mean gap between predicted and observed risk over ten equal-width bins."""
    bins = CALIBRATION_BINS
    mass = np.bincount(sample.bin_index, weights, bins)
    predicted = np.bincount(sample.bin_index, weights * sample.scores, bins)
    observed = np.bincount(sample.bin_index, weights * sample.labels, bins)
    filled = mass > 0
    gaps = np.abs(predicted[filled] - observed[filled]) / mass[filled]
    return float(np.sum(mass[filled] * gaps) / mass.sum())


def precision_at_top(sample: ScoredSample, weights: np.ndarray) -> float:
    """Share of readmissions among the flagged highest-risk encounters."""
    flagged_mass = np.sum(weights * sample.flagged)
    if flagged_mass == 0:
        return float("nan")
    return float(np.sum(weights * sample.flagged * sample.labels) / flagged_mass)


def recall_at_top(sample: ScoredSample, weights: np.ndarray) -> float:
    """Share of all readmissions that the flagged highest-risk encounters catch."""
    positives = np.sum(weights * sample.labels)
    if positives == 0:
        return float("nan")
    return float(np.sum(weights * sample.flagged * sample.labels) / positives)


METRICS: dict[str, WeightedMetric] = {
    "roc_auc": roc_auc,
    "pr_auc": average_precision,
    "brier": brier,
    "ece": expected_calibration_error,
    "precision_at_top": precision_at_top,
    "recall_at_top": recall_at_top,
}
