"""Model performance on a batch: estimated before the labels arrive, realised after.

The estimate follows confidence-based performance estimation (CBPE): a calibrated model's
probability *is* its expected outcome, so the expected ROC-AUC of a batch is the AUC computed
with each encounter counted ``p`` times a positive and ``1 - p`` times a negative. It moves when
the case mix moves (covariate shift) and can warn before any label is known; it cannot see a
change in the relation between features and outcome (concept drift). That is what the realised
AUC, compared with the estimate once labels arrive, is for.

Recalibration: CBPE is only as right as the probabilities are calibrated *on the batch being
estimated*. The model is calibrated on its training period; on later encounters of this
extract it predicts more risk than there is (0.147 predicted against 0.110 observed), and the
uncorrected estimate runs about 0.03 above the realised AUC on every window. So, once the
outcomes of an earlier window served by the same version are known, its outcomes are regressed
on the logit of its probabilities (logistic recalibration: an intercept and a slope), and the
estimate of a later window uses the recalibrated probabilities as expected outcomes, the ranking
still being the model's own. Only outcomes known when the window is monitored are used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from healthpredict.modeling.bootstrap import (
    Interval,
    patient_bootstrap_weights,
    percentile_interval,
)
from healthpredict.modeling.metrics import ScoredSample, expected_calibration_error, roc_auc

_EPSILON = 1e-6


@dataclass(frozen=True)
class Recalibration:
    """Logistic recalibration of a model's probabilities: ``logit(q) = a + b logit(p)``."""

    intercept: float
    slope: float

    @classmethod
    def fit(
        cls, labels: np.ndarray, probabilities: np.ndarray, min_rows: int
    ) -> Recalibration | None:
        """Fitted on labelled encounters; None with fewer than ``min_rows`` or one outcome."""
        y = np.asarray(labels, dtype=float)
        if len(y) < min_rows or y.min() == y.max():
            return None
        from sklearn.linear_model import LogisticRegression

        logits = _logit(np.asarray(probabilities, dtype=float)).reshape(-1, 1)
        model = LogisticRegression(C=1e6).fit(logits, y)  # no shrinkage: two parameters
        return cls(float(model.intercept_[0]), float(model.coef_[0, 0]))

    def apply(self, probabilities: np.ndarray) -> np.ndarray:
        """The recalibrated probabilities."""
        logits = self.intercept + self.slope * _logit(np.asarray(probabilities, dtype=float))
        return 1 / (1 + np.exp(-logits))


def _logit(p: np.ndarray) -> np.ndarray:
    clipped = np.clip(p, _EPSILON, 1 - _EPSILON)
    return np.log(clipped / (1 - clipped))


def estimated_auc(probabilities: np.ndarray, recalibration: Recalibration | None = None) -> float:
    """Expected ROC-AUC on these rows without labels (CBPE): the model's ranking, with the
    (recalibrated) probabilities as expected outcomes."""
    p = np.clip(np.asarray(probabilities, dtype=float), 0.0, 1.0)
    expected = p if recalibration is None else recalibration.apply(p)
    return roc_auc(ScoredSample.build(expected, p, 0.1), np.ones(len(p)))


@dataclass(frozen=True)
class RealisedPerformance:
    """Performance on a labelled batch, with patient-grouped bootstrap intervals.

    ``auc_shortfall`` is realised minus estimated AUC: near zero when the model's relation
    still holds, clearly negative under concept drift. ``calibration_gap`` is the observed
    minus the predicted readmission rate: the signature of a prior shift.
    """

    roc_auc: Interval
    estimated_auc: float
    auc_shortfall: Interval
    ece: float
    observed_rate: float
    predicted_rate: float
    calibration_gap: Interval
    n_rows: int


def realised_performance(
    labels: np.ndarray,
    probabilities: np.ndarray,
    patients: pd.Series | np.ndarray,
    rounds: int,
    confidence_level: float,
    seed: int,
) -> RealisedPerformance:
    """Measure a batch once its labels are known."""
    y = np.asarray(labels, dtype=float)
    p = np.asarray(probabilities, dtype=float)
    sample = ScoredSample.build(y, p, 0.1)
    estimate = estimated_auc(p)
    aucs, gaps = [], []
    for weights in patient_bootstrap_weights(patients, rounds, seed):
        aucs.append(roc_auc(sample, weights))
        gaps.append(float(np.average(y - p, weights=weights)))
    auc = percentile_interval(roc_auc(sample, np.ones(len(y))), aucs, confidence_level)
    return RealisedPerformance(
        roc_auc=auc,
        estimated_auc=estimate,
        auc_shortfall=Interval(auc.estimate - estimate, auc.low - estimate, auc.high - estimate),
        ece=expected_calibration_error(sample, np.ones(len(y))),
        observed_rate=float(y.mean()),
        predicted_rate=float(p.mean()),
        calibration_gap=percentile_interval(float((y - p).mean()), gaps, confidence_level),
        n_rows=len(y),
    )
