"""MLflow tracking and the Model Registry: where runs go, how models are logged and aliased.

Aliases (``champion``, ``challenger``), never the deprecated stages. Every registered version is
tagged with the data it was trained on, its test metrics, and why it did or did not get an alias.
The aliases themselves are written by :mod:`healthpredict.modeling.champion`; ``CHAMPION``,
``CHALLENGER`` and ``current_version`` are defined there and stay importable from here.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from importlib import metadata

import mlflow
import mlflow.sklearn
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import ModelSignature, infer_signature
from sklearn.pipeline import Pipeline

from healthpredict.modeling.champion import (
    CHALLENGER,
    CHAMPION,
    assign_initial_alias,
    current_version,
)
from healthpredict.modeling.evaluate import EvalReport
from healthpredict.settings import Settings

MODEL_ARTIFACT = "model"
# Packages a loader needs; listed explicitly because MLflow's inference re-loads the model.
_RUNTIME_PACKAGES = ("scikit-learn", "lightgbm", "pandas", "numpy", "cloudpickle", "healthpredict")
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegisteredVersion:
    """A registered model version and the alias decision taken for it."""

    name: str
    version: str
    run_id: str
    alias: str | None
    reason: str

    @property
    def uri(self) -> str:
        """``models:/`` URI of this exact version."""
        return f"models:/{self.name}/{self.version}"


def configure_tracking(settings: Settings) -> str:
    """Point MLflow at the configured store and return the experiment id (created if needed)."""
    if settings.tracking_uri.startswith("sqlite:///"):
        settings.data.data_dir.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    experiment = mlflow.get_experiment_by_name(settings.tracking.experiment_name)
    if experiment is not None:
        experiment_id = str(experiment.experiment_id)
    else:
        experiment_id = mlflow.create_experiment(
            settings.tracking.experiment_name, artifact_location=settings.artifact_location
        )
    # Without this, runs land in MLflow's "Default" experiment and its ./mlruns artifact folder.
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def model_signature(example: pd.DataFrame, pipeline: Pipeline) -> ModelSignature:
    """Signature from raw records to the positive-class probability columns."""
    return infer_signature(example, pipeline.predict_proba(example))


def log_pipeline(pipeline: Pipeline, example: pd.DataFrame) -> str:
    """Log the fitted pipeline to the active run; return its ``runs:/`` URI.

    Serialised with cloudpickle on purpose: skops cannot hold a LightGBM booster, and the only
    models loaded from this registry are ones Health Predict trained itself. Loading needs the
    ``healthpredict`` package installed (its transformer is referenced, not copied).
    """
    with warnings.catch_warnings():
        # The contract makes every integer column required, so the "integers cannot be
        # missing" hint of signature inference does not apply.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        signature = model_signature(example, pipeline)
    info = mlflow.sklearn.log_model(
        pipeline,
        name=MODEL_ARTIFACT,
        serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
        signature=signature,
        input_example=example,
        pyfunc_predict_fn="predict_proba",
        pip_requirements=_pinned_requirements(),
    )
    return str(info.model_uri)


def _pinned_requirements() -> list[str]:
    return [f"{name}=={metadata.version(name)}" for name in _RUNTIME_PACKAGES]


def register(
    model_uri: str, run_id: str, settings: Settings, report: EvalReport, tags: dict[str, str]
) -> RegisteredVersion:
    """Register the model and decide its alias.

    The first model whose test ROC-AUC reaches ``min_champion_roc_auc`` becomes ``champion``.
    When a champion exists, the new version becomes ``challenger``: replacing a champion is the
    promotion gate's decision, not training's.
    """
    client = MlflowClient()
    version = mlflow.register_model(model_uri, settings.tracking.model_name).version
    alias, reason = _initial_alias(client, settings, report)
    for key, value in {**tags, **_metric_tags(report)}.items():
        client.set_model_version_tag(settings.tracking.model_name, version, key, value)
    # Last: the reason, then the alias (a retry takes a version without a reason as interrupted).
    assign_initial_alias(client, settings.tracking.model_name, str(version), alias, reason)
    logger.info("registered %s version %s (%s)", settings.tracking.model_name, version, reason)
    return RegisteredVersion(settings.tracking.model_name, str(version), run_id, alias, reason)


def _initial_alias(
    client: MlflowClient, settings: Settings, report: EvalReport
) -> tuple[str | None, str]:
    auc = report.metrics["roc_auc"].estimate
    if current_version(client, settings.tracking.model_name, CHAMPION) is not None:
        return CHALLENGER, "a champion exists; replacing it is the promotion gate's decision"
    if auc < settings.training.min_champion_roc_auc:
        return (
            None,
            f"test ROC-AUC {auc:.3f} is below the bar {settings.training.min_champion_roc_auc:.3f}",
        )
    return (
        CHAMPION,
        f"first model; test ROC-AUC {auc:.3f} >= {settings.training.min_champion_roc_auc:.3f}",
    )


def _metric_tags(report: EvalReport) -> dict[str, str]:
    return {f"test_{name}": str(interval) for name, interval in report.metrics.items()}


def load_pipeline(model_uri: str) -> Pipeline:
    """Load a logged pipeline (``models:/name@champion``, ``runs:/...``) as scikit-learn."""
    pipeline: Pipeline = mlflow.sklearn.load_model(model_uri)
    return pipeline
