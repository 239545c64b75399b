"""Data drift and prediction drift of a batch against a model's reference, with Evidently.

Every contract field is compared with the reference (:mod:`healthpredict.monitoring.fields`:
the statistic per type, the quality checks, and the calibration that keeps the family-wise
false-alarm rate at the configured level). Evidently is the engine: its registered statistical
tests compute every field's statistic (called directly: a ``Report`` also renders a plot for
each metric, about 0.1 s a field, five seconds a batch for every field), and its ``Report``
writes the per-batch HTML page on the fields off the reference and measures prediction drift,
read from the snapshot by metric identity (the column and method of each ``ValueDrift``),
never by position.

A field is *off the reference* when its distribution statistic is above its calibrated
threshold or a quality check fired. What that means for a window (a new move, the field's new
state, a return) is decided with the previous window in :mod:`healthpredict.monitoring.field_state`.

Predicted risk is compared with the model's baseline predictions by the population stability
index (an effect size with a fixed threshold: the prediction distribution is one column the
model owns, and its threshold is a retraining policy's choice).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from healthpredict.monitoring.fields import (
    NUMERICAL,
    WATCHED,
    Calibration,
    Check,
    FieldReference,
    Finding,
    comparable,
    quality_findings,
)

PREDICTION = "predicted_risk"
PREDICTION_METHOD = "psi"
REPORT_FIELDS = 8  # the page shows the most severe fields off the reference


@dataclass(frozen=True)
class FieldDrift:
    """One contract field on one batch, against the reference.

    Attributes:
        feature: The field.
        method: Its distribution statistic (Evidently's method name).
        statistic: The statistic's value: the effect size.
        threshold: Its calibrated threshold for this batch size.
        drifted: Off the reference: the statistic above the threshold or a quality finding.
        weight: The field's share of the model's split gain (0 for fields it does not use).
        findings: Every check that fired, the distribution one included.
        counts: The batch's value counts (kept to compare the next window with this one).
    """

    feature: str
    method: str
    statistic: float
    threshold: float
    drifted: bool
    weight: float
    findings: tuple[Finding, ...]
    counts: dict[str, int]

    @property
    def severity(self) -> float:
        """The statistic in units of its threshold (1: at the threshold)."""
        return self.statistic / self.threshold if self.threshold > 0 else 0.0


@dataclass(frozen=True)
class DriftResult:
    """Data and prediction drift of one batch against the reference."""

    features: tuple[FieldDrift, ...]
    calibration: Calibration
    prediction_statistic: float
    prediction_drift: bool
    report_path: Path | None

    @property
    def drifted(self) -> list[FieldDrift]:
        """Fields off the reference, most severe first."""
        return sorted((f for f in self.features if f.drifted), key=lambda f: -f.severity)


class DriftMonitor:
    """Compares batches with one reference: a model's training data and baseline predictions."""

    def __init__(
        self,
        reference: pd.DataFrame,
        baseline_predictions: np.ndarray,
        weights: pd.Series,
        level: float,
        prediction_threshold: float,
    ):
        """Summarise the reference once; calibrations are computed per batch size on use.

        Args:
            reference: Prepared frame of the model's training data (a sample of it).
            baseline_predictions: The model's predicted risks on encounters it did not see.
            weights: Share of the model's split gain per field (missing fields weigh 0).
            level: Family-wise false-alarm level over every check of every field.
            prediction_threshold: PSI of the predicted risk that counts as prediction drift.
        """
        self.fields = FieldReference(reference, level)
        self.weights = weights.reindex([f.name for f in WATCHED], fill_value=0.0)
        self.prediction_threshold = prediction_threshold
        self._baseline = pd.DataFrame({PREDICTION: np.asarray(baseline_predictions, dtype=float)})

    def run(
        self, batch: pd.DataFrame, predictions: np.ndarray, html_path: Path | None = None
    ) -> DriftResult:
        """Measure drift of ``batch`` (prepared frame) and of its predicted risks.

        With ``html_path``, Evidently's report on the fields is saved there, and the one on
        the predicted risk beside it with a ``_predictions`` suffix.
        """
        values = comparable(batch)
        calibration = self.fields.calibration(len(values))
        features = tuple(
            self._field(name, values[name], statistic, calibration)
            for name, statistic in field_statistics(values, self.fields.values).items()
        )
        risks = pd.DataFrame({PREDICTION: np.asarray(predictions, dtype=float)})
        prediction = report_statistics(
            risks,
            self._baseline,
            {PREDICTION: (PREDICTION_METHOD, self.prediction_threshold)},
            html_path.with_name(html_path.stem + "_predictions.html") if html_path else None,
        )[PREDICTION]
        result = DriftResult(
            features=features,
            calibration=calibration,
            prediction_statistic=prediction,
            prediction_drift=prediction > self.prediction_threshold,
            report_path=html_path,
        )
        if html_path is not None:
            shown = result.drifted[:REPORT_FIELDS] or list(features[:1])
            report_statistics(
                values[[f.feature for f in shown]],
                self.fields.values[[f.feature for f in shown]],
                {f.feature: (f.method, f.threshold) for f in shown},
                html_path,
            )
        return result

    def _field(
        self, name: str, values: pd.Series, statistic: float, calibration: Calibration
    ) -> FieldDrift:
        reference, null = self.fields.fields[name], calibration.nulls[name]
        findings = []
        if statistic > null.statistic:
            times = f" ({statistic / null.statistic:.1f}x)" if null.statistic > 0 else ""
            detail = (
                f"{reference.field.statistic.value} {statistic:.3f} against a calibrated "
                f"threshold of {null.statistic:.3f}{times}"
            )
            findings.append(Finding(name, Check.DISTRIBUTION, statistic, null.statistic, detail))
        findings.extend(quality_findings(reference, values, null))
        return FieldDrift(
            feature=name,
            method=reference.field.statistic.value,
            statistic=statistic,
            threshold=null.statistic,
            drifted=bool(findings),
            weight=float(self.weights[name]),
            findings=tuple(findings),
            counts={str(k): int(v) for k, v in values.value_counts().items()},
        )


def field_statistics(current: pd.DataFrame, reference: pd.DataFrame) -> dict[str, float]:
    """Every watched field's distribution statistic, by Evidently's registered tests."""
    from evidently.legacy.calculations.stattests.registry import get_stattest
    from evidently.legacy.core import ColumnType

    found = {}
    for field in WATCHED:
        kind = ColumnType.Numerical if field.name in NUMERICAL else ColumnType.Categorical
        ours, theirs = reference[field.name], current[field.name]
        test = get_stattest(ours, theirs, kind, field.statistic.value)
        found[field.name] = float(test(ours, theirs, kind, 0.1).drift_score)  # threshold unused
    return found


def report_statistics(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    methods: dict[str, tuple[str, float]],
    html_path: Path | None,
) -> dict[str, float]:
    """Evidently's ``Report`` of one ``ValueDrift`` per column of ``current``.

    Args:
        current: The batch, columns as compared.
        reference: The reference, same columns.
        methods: Evidently method and threshold per column (the threshold is shown on the
            page; the verdict is the caller's).
        html_path: Where to save the page, or None.

    Returns:
        The statistic per column, read from the snapshot by each metric's column and method.
    """
    # Imported here: Evidently takes seconds to import and only monitoring needs it.
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    columns = list(current.columns)
    definition = DataDefinition(
        numerical_columns=[c for c in columns if c in NUMERICAL or c == PREDICTION],
        categorical_columns=[c for c in columns if c not in NUMERICAL and c != PREDICTION],
    )
    report = Report(
        [ValueDrift(column=c, method=methods[c][0], threshold=methods[c][1]) for c in columns]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Evidently warns about its own internals
        snapshot = report.run(
            Dataset.from_pandas(current, data_definition=definition),
            Dataset.from_pandas(reference, data_definition=definition),
        )
    if html_path is not None:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(html_path))
    return _by_identity(snapshot.dict()["metrics"], {c: m for c, (m, _) in methods.items()})


def _by_identity(metrics: list[dict[str, Any]], methods: dict[str, str]) -> dict[str, float]:
    """Each column's value, found by the metric's configuration (type, column, method)."""
    found: dict[str, float] = {}
    for metric in metrics:
        config = metric["config"]
        column = config.get("column")
        if config.get("type", "").endswith(":ValueDrift") and methods.get(column) == config.get(
            "method"
        ):
            found[column] = float(metric["value"])
    missing = sorted(set(methods) - set(found))
    if missing:
        raise RuntimeError(f"Evidently's snapshot has no ValueDrift result for: {missing}")
    return found
