"""The promotion gate: is the challenger really better than the champion?

Both models score the same encounters; a paired, patient-grouped bootstrap (the same patient
resamples for both) gives an interval for the ROC-AUC gain and for the change in calibration
error. The challenger is promoted only if its gain reaches the configured margin, the interval
excludes a loss beyond the tolerance, and its calibration error is not shown (by the whole
interval) to rise by more than the allowed amount. A gain
inside the noise is refused: "not shown to be better" is not "better".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from healthpredict.modeling.evaluate import Interval, patient_bootstrap_weights
from healthpredict.modeling.metrics import ScoredSample, expected_calibration_error, roc_auc


@dataclass(frozen=True)
class GatePolicy:
    """The thresholds of the gate and the bootstrap behind it."""

    min_auc_gain: float
    loss_tolerance: float
    max_ece_increase: float
    rounds: int = 1000
    confidence_level: float = 0.95
    seed: int = 0


@dataclass(frozen=True)
class Comparison:
    """Paired measurements of two models on the same rows."""

    champion_roc_auc: float
    challenger_roc_auc: float
    auc_gain: Interval
    champion_ece: float
    challenger_ece: float
    ece_increase: Interval


@dataclass(frozen=True)
class GateDecision(Comparison):
    """Everything the gate saw and decided (both scores, intervals, policy, verdict, reason);
    recorded on both model versions."""

    champion_version: str
    challenger_version: str
    window: str
    n_rows: int
    n_patients: int
    policy: GatePolicy
    promote: bool
    reason: str

    def as_tags(self) -> dict[str, str]:
        """Flat text tags for the registry."""
        return {
            "gate_verdict": "promoted" if self.promote else "refused",
            "gate_reason": self.reason,
            "gate_window": self.window,
            "gate_auc_gain": str(self.auc_gain),
            "gate_ece_increase": str(self.ece_increase),
            "gate_versions": (
                f"champion v{self.champion_version} vs challenger v{self.challenger_version}"
            ),
        }

    def to_dict(self) -> dict[str, object]:
        """Plain data, for a JSON record."""
        return asdict(self)


def compare(
    labels: np.ndarray,
    champion_scores: np.ndarray,
    challenger_scores: np.ndarray,
    groups: pd.Series | np.ndarray,
    policy: GatePolicy,
) -> Comparison:
    """Paired patient-grouped bootstrap of the AUC gain and the ECE increase."""
    champion = ScoredSample.build(labels, champion_scores, 0.1)
    challenger = ScoredSample.build(labels, challenger_scores, 0.1)
    gains, increases = [], []
    for weights in patient_bootstrap_weights(groups, policy.rounds, policy.seed):
        gains.append(roc_auc(challenger, weights) - roc_auc(champion, weights))
        increases.append(
            expected_calibration_error(challenger, weights)
            - expected_calibration_error(champion, weights)
        )
    ones = np.ones(len(labels))
    alpha = (1 - policy.confidence_level) / 2
    auc = (roc_auc(champion, ones), roc_auc(challenger, ones))
    ece = (expected_calibration_error(champion, ones), expected_calibration_error(challenger, ones))
    return Comparison(
        champion_roc_auc=auc[0],
        challenger_roc_auc=auc[1],
        auc_gain=_percentile_interval(auc[1] - auc[0], gains, alpha),
        champion_ece=ece[0],
        challenger_ece=ece[1],
        ece_increase=_percentile_interval(ece[1] - ece[0], increases, alpha),
    )


def _percentile_interval(estimate: float, draws: list[float], alpha: float) -> Interval:
    values = np.asarray(draws)
    values = values[~np.isnan(values)]
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return Interval(float(estimate), float(low), float(high))


def verdict(comparison: Comparison, policy: GatePolicy) -> tuple[bool, str]:
    """Apply the policy; the reason names the rule that decided."""
    gain = comparison.auc_gain
    if gain.estimate < policy.min_auc_gain:
        return False, (
            f"ROC-AUC gain {gain} is below the required margin {policy.min_auc_gain:.3f}"
        )
    if gain.low < -policy.loss_tolerance:
        return False, (
            f"the ROC-AUC gain interval {gain} admits a loss beyond the tolerance "
            f"{policy.loss_tolerance:.3f}: not shown to be better"
        )
    # Small windows inflate ECE, so only a rise the interval confirms blocks a promotion.
    if comparison.ece_increase.low > policy.max_ece_increase:
        return False, (
            f"calibration error rises by {comparison.ece_increase}, surely more than "
            f"{policy.max_ece_increase:.3f}"
        )
    return True, (
        f"ROC-AUC gain {gain} reaches the margin {policy.min_auc_gain:.3f} and excludes a loss "
        f"beyond {policy.loss_tolerance:.3f}; calibration change {comparison.ece_increase}"
    )


def decide(
    labels: np.ndarray,
    scores: tuple[np.ndarray, np.ndarray],
    groups: pd.Series,
    policy: GatePolicy,
    versions: tuple[str, str],
    window: str,
) -> GateDecision:
    """Compare champion and challenger scores (in that order) and apply the policy.

    Every caller (``promote``, the DAGs' gate, the simulation) decides here, so a decision
    means the same whatever recorded it.
    """
    comparison = compare(labels, scores[0], scores[1], groups, policy)
    promote, reason = verdict(comparison, policy)
    return GateDecision(
        champion_version=versions[0],
        challenger_version=versions[1],
        window=window,
        n_rows=len(labels),
        n_patients=int(pd.Series(np.asarray(groups)).nunique()),
        policy=policy,
        promote=promote,
        reason=reason,
        **vars(comparison),
    )
