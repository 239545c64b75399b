"""Honest evaluation: metrics with patient-grouped bootstrap intervals, overall and by subgroup.

Resampling patients (not encounters) keeps a patient's encounters together, as they are not
independent; every interval here is a percentile interval over those resamples
(:mod:`healthpredict.modeling.bootstrap`, re-exported here for the callers that import
``Interval`` and ``patient_bootstrap_weights`` from this module).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from healthpredict.modeling.bootstrap import (
    Interval,
    patient_bootstrap_weights,
    percentile_interval,
)
from healthpredict.modeling.metrics import METRICS, ScoredSample

__all__ = [
    "EvalReport",
    "Interval",
    "SubgroupReport",
    "evaluate_predictions",
    "patient_bootstrap_weights",
]

SUBGROUP_ATTRIBUTES = ("age", "gender", "race")
MIN_SUBGROUP_POSITIVES = 10
OVERALL = ("all", "all")


@dataclass(frozen=True)
class SubgroupReport:
    """Metrics of one subgroup (e.g. gender = Female)."""

    attribute: str
    value: str
    n_rows: int
    n_positive: int
    metrics: dict[str, Interval]


@dataclass(frozen=True)
class EvalReport:
    """Everything measured on one evaluation window."""

    n_rows: int
    n_patients: int
    positive_rate: float
    top_fraction: float
    bootstrap_rounds: int
    confidence_level: float
    metrics: dict[str, Interval]
    subgroups: list[SubgroupReport] = field(default_factory=list)

    def flat_metrics(self, prefix: str = "test") -> dict[str, float]:
        """Metrics as flat ``name -> value`` pairs, for MLflow."""
        flat: dict[str, float] = {}
        for name, interval in self.metrics.items():
            flat[f"{prefix}_{name}"] = interval.estimate
            flat[f"{prefix}_{name}_ci_low"] = interval.low
            flat[f"{prefix}_{name}_ci_high"] = interval.high
        return flat

    def to_dict(self) -> dict[str, object]:
        """Plain data, for JSON artifacts."""
        return asdict(self)


def evaluate_predictions(
    labels: pd.Series,
    scores: np.ndarray,
    groups: pd.Series,
    attributes: pd.DataFrame | None = None,
    rounds: int = 500,
    confidence_level: float = 0.95,
    top_fraction: float = 0.10,
    seed: int = 0,
) -> EvalReport:
    """Evaluate probabilities against labels with patient-grouped bootstrap intervals.

    Args:
        labels: 0/1 outcomes.
        scores: Predicted probabilities of the positive class.
        groups: Patient key of each row (the bootstrap resamples these).
        attributes: Optional subgroup columns (age, gender, race) aligned with ``labels``.
        rounds: Bootstrap resamples.
        confidence_level: Coverage of the percentile intervals.
        top_fraction: Share of highest-risk rows flagged for precision/recall at the top.
        seed: Seed of the resampling.
    """
    y = np.asarray(labels, dtype=float)
    masks = _subgroup_masks(y, attributes)
    samples = {
        key: ScoredSample.build(y[mask], scores[mask], top_fraction) for key, mask in masks.items()
    }
    draws = _bootstrap_draws(samples, masks, groups, rounds, seed)
    intervals = {
        key: {
            name: percentile_interval(
                metric(sample, np.ones(len(sample.labels))), draws[key][name], confidence_level
            )
            for name, metric in METRICS.items()
        }
        for key, sample in samples.items()
    }
    subgroups = [
        SubgroupReport(key[0], key[1], int(mask.sum()), int(y[mask].sum()), intervals[key])
        for key, mask in masks.items()
        if key != OVERALL
    ]
    return EvalReport(
        n_rows=len(y),
        n_patients=int(pd.Series(np.asarray(groups)).nunique()),
        positive_rate=float(y.mean()),
        top_fraction=top_fraction,
        bootstrap_rounds=rounds,
        confidence_level=confidence_level,
        metrics=intervals[OVERALL],
        subgroups=subgroups,
    )


def _subgroup_masks(
    labels: np.ndarray, attributes: pd.DataFrame | None
) -> dict[tuple[str, str], np.ndarray]:
    """Row masks: everyone, then each subgroup with enough readmissions to measure."""
    masks = {OVERALL: np.ones(len(labels), dtype=bool)}
    if attributes is None:
        return masks
    for attribute in SUBGROUP_ATTRIBUTES:
        values = attributes[attribute].fillna("missing").astype(str).to_numpy()
        for value in sorted(set(values)):
            mask = values == value
            positives = labels[mask].sum()
            if positives >= MIN_SUBGROUP_POSITIVES and positives < mask.sum():
                masks[(attribute, value)] = mask
    return masks


def _bootstrap_draws(
    samples: dict[tuple[str, str], ScoredSample],
    masks: dict[tuple[str, str], np.ndarray],
    groups: pd.Series | np.ndarray,
    rounds: int,
    seed: int,
) -> dict[tuple[str, str], dict[str, list[float]]]:
    """Every metric of every subgroup on the same patient resamples."""
    draws: dict[tuple[str, str], dict[str, list[float]]] = {
        key: {name: [] for name in METRICS} for key in samples
    }
    for weights in patient_bootstrap_weights(groups, rounds, seed):
        for key, sample in samples.items():
            for name, metric in METRICS.items():
                draws[key][name].append(metric(sample, weights[masks[key]]))
    return draws
