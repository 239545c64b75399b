"""The patient-grouped bootstrap every interval of the project comes from.

Resampling patients (not encounters) keeps a patient's encounters together, as they are not
independent. A resample is a vector of row weights (how often each row's patient was drawn);
two models scored on the same rows and weighted by the same draws give a paired bootstrap.
:func:`patient_bootstrap_weights` yields the draws one round at a time;
:func:`patient_bootstrap_matrix` gives the same draws at once (rows x rounds: one column per
round, so that sums along the rows run over contiguous memory) for code that evaluates every
round in one vectorised pass. Every interval is a percentile interval over
the rounds (:func:`percentile_interval`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap confidence interval."""

    estimate: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.estimate:.3f} [{self.low:.3f}, {self.high:.3f}]"


def _patient_draws(groups: pd.Series | np.ndarray, rounds: int, seed: int) -> Iterator[np.ndarray]:
    """Per round, how often each row's patient was drawn (the one place the draws are made)."""
    codes, uniques = pd.factorize(pd.Series(np.asarray(groups)))
    n_patients = len(uniques)
    rng = np.random.default_rng(seed)
    for _ in range(rounds):
        counts = np.bincount(rng.integers(0, n_patients, n_patients), minlength=n_patients)
        yield counts[codes]


def patient_bootstrap_weights(
    groups: pd.Series | np.ndarray, rounds: int, seed: int
) -> Iterator[np.ndarray]:
    """Yield row weights of ``rounds`` patient-level resamples (with replacement).

    Two models scored on the same rows and weighted by the same draws give a paired bootstrap.
    """
    for counts in _patient_draws(groups, rounds, seed):
        yield counts.astype(float)


def patient_bootstrap_matrix(groups: pd.Series | np.ndarray, rounds: int, seed: int) -> np.ndarray:
    """The draws of :func:`patient_bootstrap_weights` (same seed: the same rounds) as one
    ``rows x rounds`` matrix of small integer weights (``float32``: 500 rounds of 10,000 rows
    are 20 MB); column ``r`` is round ``r``."""
    matrix = np.empty((len(groups), rounds), dtype=np.float32)
    for column, counts in enumerate(_patient_draws(groups, rounds, seed)):
        matrix[:, column] = counts
    return matrix


def percentile_interval(
    estimate: float, draws: Sequence[float] | np.ndarray, confidence_level: float
) -> Interval:
    """``estimate`` with the percentile interval of the bootstrap ``draws`` at
    ``confidence_level``; rounds where the statistic was undefined (NaN, e.g. a resample
    without a readmission) are left out, and with none left the interval is NaN."""
    values = np.asarray(draws, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return Interval(float(estimate), float("nan"), float("nan"))
    alpha = (1 - confidence_level) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return Interval(float(estimate), float(low), float(high))


def roc_auc_rounds(weights: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC-AUC of every round at once: ``weights`` is ``rows x rounds`` (a
    :func:`patient_bootstrap_matrix`, or a column of ones for the point estimate); ties count
    one half.

    The negatives are sorted by score once and their weights summed cumulatively down the
    rows; each positive then finds, by binary search, the negatives below its score and at it,
    and the AUC of every round is the weighted count of concordant pairs over all pairs. It
    equals :func:`healthpredict.modeling.metrics.roc_auc` round by round (tested). Integer
    weights keep the float32 cumulative sums exact (below 2**24); the final sums are float64.
    A round without a weighted positive or negative gives NaN.
    """
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float32)
    negatives = np.flatnonzero(~y)
    negatives = negatives[np.argsort(s[negatives], kind="stable")]
    positives = np.flatnonzero(y)
    if len(negatives) == 0 or len(positives) == 0:
        return np.full(w.shape[1], np.nan)
    negative_scores = s[negatives]
    below = np.searchsorted(negative_scores, s[positives], side="left")
    up_to = np.searchsorted(negative_scores, s[positives], side="right")
    cumulative = np.zeros((len(negatives) + 1, w.shape[1]), dtype=np.float32)
    np.cumsum(w[negatives], axis=0, out=cumulative[1:])
    positive_weights = w[positives]
    # Negatives strictly below count 1, tied ones 1/2: (below + up_to) / 2 per positive.
    twice = positive_weights * (cumulative[below] + cumulative[up_to])
    concordant = 0.5 * twice.sum(axis=0, dtype=np.float64)
    pairs = positive_weights.sum(axis=0, dtype=np.float64) * cumulative[-1].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, concordant / np.where(pairs > 0, pairs, 1.0), np.nan)
