"""Model performance on a batch: estimated before the labels arrive, realised after.

The estimate follows confidence-based performance estimation (CBPE): a calibrated model's
probability *is* its expected outcome, so the expected ROC-AUC of a batch is the AUC computed
with each encounter counted ``p`` times a positive and ``1 - p`` times a negative. It moves when
the case mix moves (covariate shift) and can warn before any label is known; it cannot see a
change in the relation between features and outcome (concept drift). That is what the realised
AUC, compared with the estimate once labels arrive, is for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from healthpredict.modeling.evaluate import Interval, patient_bootstrap_weights
from healthpredict.modeling.metrics import ScoredSample, expected_calibration_error, roc_auc


def estimated_auc(probabilities: np.ndarray) -> float:
    """Expected ROC-AUC of a calibrated model on these rows, without labels (CBPE)."""
    p = np.clip(np.asarray(probabilities, dtype=float), 0.0, 1.0)
    return roc_auc(ScoredSample.build(p, p, 0.1), np.ones(len(p)))


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
    alpha = (1 - confidence_level) / 2
    auc = _interval(roc_auc(sample, np.ones(len(y))), aucs, alpha)
    return RealisedPerformance(
        roc_auc=auc,
        estimated_auc=estimate,
        auc_shortfall=Interval(auc.estimate - estimate, auc.low - estimate, auc.high - estimate),
        ece=expected_calibration_error(sample, np.ones(len(y))),
        observed_rate=float(y.mean()),
        predicted_rate=float(p.mean()),
        calibration_gap=_interval(float((y - p).mean()), gaps, alpha),
        n_rows=len(y),
    )


def _interval(estimate: float, draws: list[float], alpha: float) -> Interval:
    values = np.asarray(draws)
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return Interval(estimate, float("nan"), float("nan"))
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return Interval(float(estimate), float(low), float(high))
