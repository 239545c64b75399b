"""Data drift and prediction drift with Evidently, on the features that matter.

Choices, and why (figures in docs/monitoring_and_retraining.md):

- Only the champion's most important request fields are monitored, each weighted by its share
  of the model's split gain: a drifting field the model ignores cannot hurt it, and Evidently's
  default preset over every column flags a quarter of them on every ordinary batch of this
  ten-year extract.
- The test is the population stability index (PSI), an effect size, not a p-value: with 10,000
  rows a p-value flags differences too small to matter. On the exchangeable control (no drift
  by construction) PSI stays far below the threshold.
- Categorical fields are made comparable first: ICD-9 codes are grouped into chapters and
  categories rarer than :data:`RARE_SHARE` in the reference are pooled, because PSI over
  hundreds of sparse codes is mostly sampling noise. Missing values are a category of their own
  (a field going empty is drift).
- Predicted risk is monitored the same way against the model's own baseline predictions.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from healthpredict.data.schema import FEATURE_COLUMNS, INTEGER_COLUMNS
from healthpredict.features import icd9_group

logger = logging.getLogger(__name__)
PREDICTION = "predicted_risk"
DIAGNOSIS_COLUMNS = ("diag_1", "diag_2", "diag_3")
RARE_SHARE = 0.005
MISSING = "(missing)"
RARE = "(rare)"
METHOD = "psi"


@dataclass(frozen=True)
class FeatureDrift:
    """One monitored field on one batch."""

    feature: str
    statistic: float
    threshold: float
    drifted: bool
    weight: float


@dataclass(frozen=True)
class DriftResult:
    """Data and prediction drift of one batch against the reference."""

    features: tuple[FeatureDrift, ...]
    drift_share: float
    dataset_drift: bool
    prediction_statistic: float
    prediction_drift: bool
    report_path: Path | None

    @property
    def n_drifted(self) -> int:
        """Monitored fields flagged."""
        return sum(f.drifted for f in self.features)

    @property
    def drifted_features(self) -> list[str]:
        """Names of the flagged fields, largest statistic first."""
        flagged = [f for f in self.features if f.drifted]
        return [f.feature for f in sorted(flagged, key=lambda f: -f.statistic)]


@dataclass(frozen=True)
class DriftThresholds:
    """When a field has drifted, and when the dataset has.

    Attributes:
        feature: PSI above which a field counts as drifted.
        share: Importance-weighted share of drifted fields that makes the dataset drifted.
        single: PSI of one field that makes the dataset drifted on its own (a large shift of
            a field the model uses a little still changes who the model is scoring).
        prediction: PSI of the predicted risk that counts as prediction drift.
    """

    feature: float
    share: float
    single: float
    prediction: float


def monitored_fields(importance: pd.Series, k: int) -> pd.Series:
    """The ``k`` most important request fields, weights normalised to sum to 1.

    Derived quantities (e.g. total prior visits) are left out: they are functions of request
    fields, which are what an upstream change breaks and what a data team can act on.
    """
    fields = importance[importance.index.isin(FEATURE_COLUMNS) & (importance > 0)]
    top = fields.sort_values(ascending=False).head(k)
    if top.empty:
        top = pd.Series(1.0, index=list(FEATURE_COLUMNS[:k]))
    return top / top.sum()


class DriftMonitor:
    """Compares batches with one reference: a model's training data and baseline predictions."""

    def __init__(
        self,
        reference: pd.DataFrame,
        baseline_predictions: np.ndarray,
        weights: pd.Series,
        thresholds: DriftThresholds,
    ):
        """Prepare the reference once: category pooling is learnt from it."""
        self.weights = weights
        self.thresholds = thresholds
        self.fields = list(weights.index)
        self._categories = {
            field: _kept_categories(_as_category(reference[field], field))
            for field in self.fields
            if field not in INTEGER_COLUMNS
        }
        self._reference = self._comparable(reference)
        self._baseline = pd.DataFrame({PREDICTION: np.asarray(baseline_predictions, dtype=float)})

    def run(
        self, batch: pd.DataFrame, predictions: np.ndarray, html_path: Path | None = None
    ) -> DriftResult:
        """Measure drift of ``batch`` (prepared frame) and of its predicted risks.

        With ``html_path``, Evidently's reports are saved there (features) and beside it with
        a ``_predictions`` suffix.
        """
        numerical = [f for f in self.fields if f in INTEGER_COLUMNS]
        statistics = _psi(
            self._comparable(batch),
            self._reference,
            {f: self.thresholds.feature for f in self.fields},
            numerical,
            html_path,
        )
        prediction = _psi(
            pd.DataFrame({PREDICTION: np.asarray(predictions, dtype=float)}),
            self._baseline,
            {PREDICTION: self.thresholds.prediction},
            [PREDICTION],
            html_path.with_name(html_path.stem + "_predictions.html") if html_path else None,
        )[PREDICTION]
        features = tuple(
            FeatureDrift(
                feature=field,
                statistic=statistics[field],
                threshold=self.thresholds.feature,
                drifted=statistics[field] > self.thresholds.feature,
                weight=float(self.weights[field]),
            )
            for field in self.fields
        )
        share = float(sum(f.weight for f in features if f.drifted))
        strongest = max((f.statistic for f in features), default=0.0)
        return DriftResult(
            features=features,
            drift_share=share,
            dataset_drift=share >= self.thresholds.share or strongest > self.thresholds.single,
            prediction_statistic=prediction,
            prediction_drift=prediction > self.thresholds.prediction,
            report_path=html_path,
        )

    def _comparable(self, frame: pd.DataFrame) -> pd.DataFrame:
        columns = {}
        for field in self.fields:
            if field in INTEGER_COLUMNS:
                columns[field] = frame[field].astype(float)
            else:
                values = _as_category(frame[field], field)
                columns[field] = values.where(values.isin(self._categories[field]), RARE)
        return pd.DataFrame(columns).reset_index(drop=True)


def _psi(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    thresholds: dict[str, float],
    numerical: list[str],
    html_path: Path | None,
) -> dict[str, float]:
    """PSI of every column of ``current`` against ``reference``, computed by Evidently."""
    # Imported here: Evidently takes seconds to import and only monitoring needs it.
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    columns = list(current.columns)
    definition = DataDefinition(
        numerical_columns=numerical,
        categorical_columns=[c for c in columns if c not in numerical],
    )
    report = Report([ValueDrift(column=c, method=METHOD, threshold=thresholds[c]) for c in columns])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Evidently warns about its own internals
        snapshot = report.run(
            Dataset.from_pandas(current, data_definition=definition),
            Dataset.from_pandas(reference, data_definition=definition),
        )
    if html_path is not None:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(html_path))
    values = [metric["value"] for metric in snapshot.dict()["metrics"]]
    return {column: float(value) for column, value in zip(columns, values, strict=True)}


def _as_category(values: pd.Series, field: str) -> pd.Series:
    if field in DIAGNOSIS_COLUMNS:
        values = values.map(icd9_group, na_action="ignore")
    return values.astype(object).where(values.notna(), MISSING).astype(str)


def _kept_categories(values: pd.Series) -> list[str]:
    shares = values.value_counts(normalize=True)
    return [*shares[shares >= RARE_SHARE].index, MISSING]
