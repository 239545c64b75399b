"""What a model needs to be monitored, written when it is registered and kept with it.

A :class:`MonitoringProfile` is a sample of the model's training data (the data-drift
reference), its baseline predicted risks on encounters it was not trained on (the reference
for prediction drift and the label-free estimate), each request field's share of the model's
split gain (the weights of the input-drift verdict), and what the model was trained on (which a
replay checks so that it never starts from a model that has seen the stream). It lives as three
files (:func:`save` / :func:`load`): in the MLflow run of a registered version, under
:data:`ARTIFACT_PATH`, or beside a version in a what-if run's folder. So any process (the
service, a DAG worker, the command line) can monitor any version; no monitor depends on a
simulation's folder.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from healthpredict.data.pseudonym import SEQUENCE
from healthpredict.data.schema import FEATURE_COLUMNS
from healthpredict.modeling.train import features_of
from healthpredict.monitoring.performance import estimated_auc
from healthpredict.settings import MonitoringSettings

ARTIFACT_PATH = "monitoring"
_REFERENCE, _BASELINE, _PROFILE = "reference.parquet", "baseline.parquet", "profile.json"
PREDICTED = "predicted_risk"


@dataclass(frozen=True)
class TrainingData:
    """What a model was trained on, as a replay needs to know it.

    Attributes:
        rows: Training rows.
        last_sequence: Newest encounter of the prepared timeline in it (None: none).
        production: Production windows in it, e.g. ``"default-drift windows 1-3"`` ("" none).
    """

    rows: int
    last_sequence: int | None
    production: str = ""

    def describe(self) -> str:
        """One line for tables and tags."""
        parts = []
        if self.last_sequence is not None:
            parts.append(f"timeline up to sequence {self.last_sequence}")
        if self.production:
            parts.append(f"production {self.production}")
        return f"{self.rows:,} rows: " + (" + ".join(parts) or "unknown")


@dataclass(frozen=True)
class MonitoringProfile:
    """A model's monitoring reference (see the module docstring)."""

    reference: pd.DataFrame
    baseline: np.ndarray
    baseline_auc: float
    training: TrainingData
    importance: dict[str, float] = field(default_factory=dict)

    @property
    def weights(self) -> pd.Series:
        """Every request field's share of the model's split gain (summing to 1; equal shares
        for a model without a fast path to read the gains from)."""
        gains = pd.Series(self.importance, dtype=float).reindex(list(FEATURE_COLUMNS))
        gains = gains.fillna(0.0).clip(lower=0.0)
        if gains.sum() <= 0:
            gains[:] = 1.0
        return gains / gains.sum()


def build(
    pipeline: Pipeline,
    train: pd.DataFrame,
    unseen: pd.DataFrame,
    monitoring: MonitoringSettings,
    production: str = "",
) -> MonitoringProfile:
    """The profile of a freshly trained ``pipeline``.

    Args:
        pipeline: The fitted pipeline.
        train: Its training data (prepared frame; may lack ``sequence`` for logged rows).
        unseen: Encounters it was not trained on; only their predicted risks are kept (no label
            is used), as the baseline for prediction drift and the label-free estimate.
        monitoring: For the reference size.
        production: Production windows in ``train`` (see :class:`TrainingData`).
    """
    sample = train.sample(min(len(train), monitoring.reference_rows), random_state=0)
    baseline = pipeline.predict_proba(features_of(unseen))[:, 1]
    importance = field_importance(pipeline)
    sequences = train[SEQUENCE].dropna() if SEQUENCE in train else pd.Series(dtype=float)
    return MonitoringProfile(
        reference=features_of(sample).reset_index(drop=True),
        baseline=np.asarray(baseline, dtype=float),
        baseline_auc=estimated_auc(baseline),
        training=TrainingData(
            len(train), int(sequences.max()) if len(sequences) else None, production
        ),
        importance=importance,
    )


def field_importance(pipeline: Pipeline) -> dict[str, float]:
    """Split gain per request field, from the compiled model (empty without a fast path)."""
    from healthpredict.serving.fastpath import FastPathError, compile_pipeline

    try:
        compiled = compile_pipeline(pipeline)
    except FastPathError:
        return {}
    gains = np.mean(
        [m.booster.feature_importance("gain") @ compiled.group_matrix for m in compiled.members],
        axis=0,
    )
    return {str(name): float(gain) for name, gain in zip(compiled.groups, gains, strict=True)}


def save(profile: MonitoringProfile, folder: Path) -> None:
    """Write the three files into ``folder`` (created if needed)."""
    folder.mkdir(parents=True, exist_ok=True)
    profile.reference.to_parquet(folder / _REFERENCE, index=False)
    pd.DataFrame({PREDICTED: profile.baseline}).to_parquet(folder / _BASELINE, index=False)
    header = {
        "baseline_auc": profile.baseline_auc,
        "training": asdict(profile.training),
        "importance": profile.importance,
    }
    (folder / _PROFILE).write_text(json.dumps(header, indent=1))


def load(folder: Path) -> MonitoringProfile:
    """Read a profile written by :func:`save`.

    Raises:
        FileNotFoundError: ``folder`` holds no profile.
    """
    header: dict[str, Any] = json.loads((folder / _PROFILE).read_text())
    return MonitoringProfile(
        reference=pd.read_parquet(folder / _REFERENCE),
        baseline=pd.read_parquet(folder / _BASELINE)[PREDICTED].to_numpy(),
        baseline_auc=float(header["baseline_auc"]),
        training=TrainingData(**header["training"]),
        importance={str(k): float(v) for k, v in header.get("importance", {}).items()},
    )


def log_to_run(profile: MonitoringProfile) -> None:
    """Log the profile into the active MLflow run, under :data:`ARTIFACT_PATH`."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="healthpredict-profile-") as folder:
        save(profile, Path(folder))
        mlflow.log_artifacts(folder, ARTIFACT_PATH)


def load_from_run(run_id: str, tracking_uri: str) -> MonitoringProfile:
    """The profile logged into run ``run_id``.

    Raises:
        MlflowException: The run has no profile (registered before profiles existed) or the
            server cannot be reached.
    """
    import mlflow

    with tempfile.TemporaryDirectory(prefix="healthpredict-profile-") as folder:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=ARTIFACT_PATH, dst_path=folder, tracking_uri=tracking_uri
        )
        return load(Path(local))
