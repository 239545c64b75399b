"""The promotion gate: is the challenger really better than the champion?

Both models score the same encounters; a paired, patient-grouped bootstrap (the same patient
resamples for both) gives an interval for the ROC-AUC gain and for the change in calibration
error. The challenger is promoted only if its gain reaches the configured margin, the interval
excludes a loss beyond the tolerance, and its calibration error is not shown (by the whole
interval) to rise by more than the allowed amount. A gain
inside the noise is refused: "not shown to be better" is not "better".

**Per group** (age band, gender, race when the caller gives them; small groups pooled as
:mod:`healthpredict.modeling.groups` does): the same comparison of ROC-AUC within each group,
on the same patient draws as the whole population's. A challenger surely worse for a group
(the whole interval of its AUC change below ``-group_margin``) is refused with the group named,
however much better it is on average; a group too few to tell does not block.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from healthpredict.modeling.bootstrap import (
    Interval,
    patient_bootstrap_matrix,
    patient_bootstrap_weights,
    percentile_interval,
    roc_auc_rounds,
)
from healthpredict.modeling.groups import (
    Group,
    attribute_values,
    check_attributes,
    pool_groups,
)
from healthpredict.modeling.metrics import ScoredSample, expected_calibration_error, roc_auc

if TYPE_CHECKING:
    from healthpredict.settings import GateSettings, MonitoringSettings, TrainingSettings


@dataclass(frozen=True)
class GatePolicy:
    """The thresholds of the gate and the bootstrap behind it."""

    min_auc_gain: float
    loss_tolerance: float
    max_ece_increase: float
    rounds: int = 1000
    confidence_level: float = 0.95
    seed: int = 0
    group_margin: float = 0.02
    group_attributes: tuple[str, ...] = ("age", "gender", "race")
    group_min_encounters: int = 200
    group_min_positives: int = 20

    @classmethod
    def from_settings(
        cls, gate: GateSettings, training: TrainingSettings, monitoring: MonitoringSettings
    ) -> GatePolicy:
        """The gate thresholds in force: the gate's own, the training bootstrap's, and the
        patient groups monitoring measures (the gate compares the same groups)."""
        return cls(
            min_auc_gain=gate.min_auc_gain,
            loss_tolerance=gate.loss_tolerance,
            max_ece_increase=gate.max_ece_increase,
            rounds=max(training.bootstrap_rounds, 200),
            confidence_level=training.confidence_level,
            seed=training.seed,
            group_margin=gate.group_margin,
            group_attributes=tuple(monitoring.equity_attributes),
            group_min_encounters=gate.group_min_encounters,
            group_min_positives=gate.group_min_positives,
        )

    def __post_init__(self) -> None:
        check_attributes(self.group_attributes)
        if not 0.0 <= self.group_margin < 0.5:
            raise ValueError(
                f"the gate's group margin must lie in [0, 0.5), not {self.group_margin}"
            )


@dataclass(frozen=True)
class GroupComparison:
    """Champion and challenger within one group of the gate's patients.

    ``status``: "ok", "worse" (the challenger is surely worse by more than the group margin:
    it blocks) or "too few" (too small to tell: reported, never blocks; no AUC then).
    """

    attribute: str
    group: str
    members: tuple[str, ...]
    n_rows: int
    n_positive: int
    status: str
    champion_roc_auc: float
    challenger_roc_auc: float
    auc_gain: Interval

    def __str__(self) -> str:
        size = f"{self.n_rows:,} encounters"
        return f"{self.attribute} {self.group} ({size}): AUC change {self.auc_gain}"


@dataclass(frozen=True)
class Comparison:
    """Paired measurements of two models on the same rows (and, when groups were given, per
    group on the same draws)."""

    champion_roc_auc: float
    challenger_roc_auc: float
    auc_gain: Interval
    champion_ece: float
    challenger_ece: float
    ece_increase: Interval
    groups: tuple[GroupComparison, ...] = field(default=(), kw_only=True)


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
            "gate_groups": _groups_tag(self.groups),
        }

    def to_dict(self) -> dict[str, object]:
        """Plain data, for a JSON record."""
        return asdict(self)


def _groups_tag(groups: tuple[GroupComparison, ...]) -> str:
    """The per-group verdict in one short tag (the whole comparison is in the JSON record)."""
    if not groups:
        return "no groups compared"
    worse = [str(g) for g in groups if g.status == "worse"]
    few = sum(g.status == "too few" for g in groups)
    counted = f"{len(groups) - few} group(s) compared, {few} too few to tell"
    if worse:
        return f"surely worse for {'; '.join(worse)} ({counted})"[:4000]
    return f"no group surely worse ({counted})"


def compare(
    labels: np.ndarray,
    champion_scores: np.ndarray,
    challenger_scores: np.ndarray,
    groups: pd.Series | np.ndarray,
    policy: GatePolicy,
    attributes: pd.DataFrame | None = None,
) -> Comparison:
    """Paired patient-grouped bootstrap of the AUC gain and the ECE increase, and of the AUC
    gain within each group of ``attributes`` (rows aligned with ``labels``) when given."""
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
    level = policy.confidence_level
    auc = (roc_auc(champion, ones), roc_auc(challenger, ones))
    ece = (expected_calibration_error(champion, ones), expected_calibration_error(challenger, ones))
    by_group: tuple[GroupComparison, ...] = ()
    if attributes is not None:
        scores = (np.asarray(champion_scores), np.asarray(challenger_scores))
        by_group = compare_groups(np.asarray(labels), scores, groups, attributes, policy)
    return Comparison(
        champion_roc_auc=auc[0],
        challenger_roc_auc=auc[1],
        auc_gain=percentile_interval(auc[1] - auc[0], gains, level),
        champion_ece=ece[0],
        challenger_ece=ece[1],
        ece_increase=percentile_interval(ece[1] - ece[0], increases, level),
        groups=by_group,
    )


def compare_groups(
    labels: np.ndarray,
    scores: tuple[np.ndarray, np.ndarray],
    patients: pd.Series | np.ndarray,
    attributes: pd.DataFrame,
    policy: GatePolicy,
) -> tuple[GroupComparison, ...]:
    """Champion (``scores[0]``) against challenger within each group, on the draws of
    :func:`compare` (the same seed and patients give the same resamples)."""
    y = np.asarray(labels, dtype=float)
    weights = patient_bootstrap_matrix(patients, policy.rounds, policy.seed)
    compared: list[GroupComparison] = []
    for attribute in policy.group_attributes:
        values = attribute_values(attributes, attribute)
        pooled = pool_groups(
            values, y, attribute, policy.group_min_encounters, policy.group_min_positives
        )
        compared.extend(_compare_group(group, y, scores, weights, policy) for group in pooled)
    return tuple(compared)


def _compare_group(
    group: Group,
    y: np.ndarray,
    scores: tuple[np.ndarray, np.ndarray],
    weights: np.ndarray,
    policy: GatePolicy,
) -> GroupComparison:
    rows = group.mask
    if not group.enough:
        nothing = Interval(float("nan"), float("nan"), float("nan"))
        return _group_row(group, y, "too few", (float("nan"), float("nan")), nothing)
    ones = np.ones((int(rows.sum()), 1), dtype=np.float32)
    champion, challenger = (float(roc_auc_rounds(ones, y[rows], s[rows])[0]) for s in scores)
    part = weights[rows]
    gains = roc_auc_rounds(part, y[rows], scores[1][rows]) - roc_auc_rounds(
        part, y[rows], scores[0][rows]
    )
    gain = percentile_interval(challenger - champion, gains, policy.confidence_level)
    status = "worse" if gain.high < -policy.group_margin else "ok"
    return _group_row(group, y, status, (champion, challenger), gain)


def _group_row(
    group: Group, y: np.ndarray, status: str, aucs: tuple[float, float], gain: Interval
) -> GroupComparison:
    rows = group.mask
    return GroupComparison(
        attribute=group.attribute,
        group=group.name,
        members=group.members,
        n_rows=int(rows.sum()),
        n_positive=int(y[rows].sum()),
        status=status,
        champion_roc_auc=aucs[0],
        challenger_roc_auc=aucs[1],
        auc_gain=gain,
    )


def verdict(comparison: Comparison, policy: GatePolicy) -> tuple[bool, str]:
    """Apply the policy; the reason names the rule that decided."""
    gain = comparison.auc_gain
    if not np.isfinite([gain.estimate, gain.low, gain.high]).all():
        return False, f"the ROC-AUC gain {gain} cannot be measured on these rows"
    if gain.estimate < policy.min_auc_gain:
        return False, (
            f"ROC-AUC gain {gain} is below the required margin {policy.min_auc_gain:.3f}"
        )
    if gain.low < -policy.loss_tolerance:
        return False, (
            f"the ROC-AUC gain interval {gain} admits a loss beyond the tolerance "
            f"{policy.loss_tolerance:.3f}: not shown to be better"
        )
    worse = [group for group in comparison.groups if group.status == "worse"]
    if worse:
        named = "; ".join(str(group) for group in worse)
        return False, (
            f"better on average but surely worse for {named}: beyond the group margin "
            f"-{policy.group_margin:.3f}"
        )
    # Small windows inflate ECE, so only a rise the interval confirms blocks a promotion.
    if comparison.ece_increase.low > policy.max_ece_increase:
        return False, (
            f"calibration error rises by {comparison.ece_increase}, surely more than "
            f"{policy.max_ece_increase:.3f}"
        )
    return True, (
        f"ROC-AUC gain {gain} reaches the margin {policy.min_auc_gain:.3f} and excludes a loss "
        f"beyond {policy.loss_tolerance:.3f}; calibration change {comparison.ece_increase}; "
        f"{_groups_tag(comparison.groups)}"
    )


def decide(
    labels: np.ndarray,
    scores: tuple[np.ndarray, np.ndarray],
    groups: pd.Series,
    policy: GatePolicy,
    versions: tuple[str, str],
    window: str,
    attributes: pd.DataFrame | None = None,
) -> GateDecision:
    """Compare champion and challenger scores (in that order) and apply the policy.

    Every caller (``promote``, the DAGs' gate, the simulation) decides here, so a decision
    means the same whatever recorded it. ``attributes`` (the group columns, rows aligned with
    ``labels``) adds the per-group comparison; without it no group is compared.
    """
    comparison = compare(labels, scores[0], scores[1], groups, policy, attributes)
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
