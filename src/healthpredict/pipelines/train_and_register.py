"""Flow: train the pipeline and its baseline, evaluate both on the test window, track, register."""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from healthpredict.data.prepare import TARGET
from healthpredict.data.pseudonym import PATIENT_KEY, SEQUENCE
from healthpredict.data.timeline import (
    INITIAL_WINDOW,
    Manifest,
    load_manifest,
    load_test_window,
    load_window,
)
from healthpredict.modeling.evaluate import SUBGROUP_ATTRIBUTES, EvalReport, evaluate_predictions
from healthpredict.modeling.importance import feature_importance
from healthpredict.modeling.registry import (
    RegisteredVersion,
    configure_tracking,
    log_pipeline,
    register,
)
from healthpredict.modeling.train import (
    ModelKind,
    TrainedModel,
    default_params,
    features_of,
    fit_model,
)
from healthpredict.reporting import plots
from healthpredict.settings import Settings

logger = logging.getLogger(__name__)
INPUT_EXAMPLE_ROWS = 5
PARAMS_ARTIFACT = "params.json"


@dataclass(frozen=True)
class TrainingSummary:
    """The outcome of one training run."""

    registered: RegisteredVersion
    report: EvalReport
    baseline_report: EvalReport
    fit_seconds: float
    n_train: int
    data_hash: str
    training_window: str


def train_and_register(
    settings: Settings,
    params: dict[str, Any] | None = None,
    run_name: str = "lightgbm",
    tags: dict[str, str] | None = None,
) -> TrainingSummary:
    """Train LightGBM (and the logistic baseline) on the initial window, evaluate, register.

    Args:
        settings: Settings in force.
        params: Hyper-parameters in the ``defaults.yaml`` structure; the defaults when None.
        run_name: MLflow run name; the run is nested when another run is active (a search).
        tags: Extra tags for the run and the registered version.

    Raises:
        TimelineError: No prepared data, or it differs from its manifest.
    """
    manifest = load_manifest(settings.prepared_dir)
    train = load_window(settings.prepared_dir, manifest, INITIAL_WINDOW)
    test = load_test_window(settings.prepared_dir, manifest)
    window = training_window_tag(train)
    configure_tracking(settings)
    params = params or default_params()
    context = {"data_hash": manifest.data_hash, "training_window": window, **(tags or {})}
    with mlflow.start_run(run_name=run_name, nested=mlflow.active_run() is not None) as run:
        mlflow.set_tags(context)
        _log_inputs(manifest, params, settings, len(train), len(test))
        model = fit_model(ModelKind.LIGHTGBM, train, params, settings.cv_folds, settings.seed)
        report, scores = _evaluate(model, test, settings)
        mlflow.log_metrics({**report.flat_metrics(), "fit_seconds": model.fit_seconds})
        baseline_report, baseline_scores = _train_baseline(train, test, params, settings)
        _log_figures(model, test[TARGET].to_numpy(), scores, baseline_scores, report)
        log_monitoring_profile(model.pipeline, train, manifest, settings)
        model_uri = log_pipeline(model.pipeline, features_of(train).head(INPUT_EXAMPLE_ROWS))
        version_tags = {**context, "model_kind": ModelKind.LIGHTGBM.value}
        registered = register(model_uri, run.info.run_id, settings, report, version_tags)
    return TrainingSummary(
        registered,
        report,
        baseline_report,
        model.fit_seconds,
        len(train),
        manifest.data_hash,
        window,
    )


def log_monitoring_profile(
    pipeline: Pipeline, train: pd.DataFrame, manifest: Manifest, settings: Settings
) -> None:
    """Log the model's monitoring profile into the active run (:mod:`healthpredict.loop.profile`).

    Its baseline predictions are on the first production batch, the encounters that follow
    the training window: the model has not seen them, and only their predicted risks are kept.
    """
    from healthpredict.loop import profile

    unseen = load_window(settings.prepared_dir, manifest, manifest.batch_names[0])
    profile.log_to_run(profile.build(pipeline, train, unseen, settings))


def training_window_tag(train: pd.DataFrame) -> str:
    """The tag recording which encounters a model was trained on (``sequence first-last``)."""
    return f"sequence {train[SEQUENCE].iloc[0]}-{train[SEQUENCE].iloc[-1]}"


def _train_baseline(
    train: pd.DataFrame, test: pd.DataFrame, params: dict[str, Any], settings: Settings
) -> tuple[EvalReport, np.ndarray]:
    """The logistic-regression baseline, as a nested run beside the main model."""
    with mlflow.start_run(run_name="logistic-baseline", nested=True):
        baseline = fit_model(ModelKind.LOGISTIC, train, params, settings.cv_folds, settings.seed)
        report, scores = _evaluate(baseline, test, settings)
        mlflow.log_metrics(report.flat_metrics())
    return report, scores


def flat_params(params: dict[str, Any]) -> dict[str, Any]:
    """Hyper-parameters as flat MLflow params (``lightgbm.num_leaves``...)."""
    flat = {
        f"{section}.{key}": value
        for section in ("lightgbm", "preprocessing")
        for key, value in params.get(section, {}).items()
    }
    return {**flat, "calibration_method": params.get("calibration_method")}


def _log_inputs(
    manifest: Manifest, params: dict[str, Any], settings: Settings, n_train: int, n_test: int
) -> None:
    mlflow.log_params(
        {
            **flat_params(params),
            "cv_folds": settings.cv_folds,
            "seed": settings.seed,
            "n_train": n_train,
            "n_test": n_test,
        }
    )
    mlflow.log_dict(json.loads(manifest.to_json()), "data/manifest.json")
    # The exact hyper-parameters, typed, so a retrain (healthpredict simulate) can reuse them.
    mlflow.log_dict(params, PARAMS_ARTIFACT)


def _evaluate(
    model: TrainedModel, test: pd.DataFrame, settings: Settings
) -> tuple[EvalReport, np.ndarray]:
    scores = model.pipeline.predict_proba(features_of(test))[:, 1]
    return evaluate_scores(scores, test, settings), scores


def evaluate_scores(scores: np.ndarray, window: pd.DataFrame, settings: Settings) -> EvalReport:
    """Evaluate probabilities for a prepared window the way every report here does."""
    return evaluate_predictions(
        window[TARGET],
        scores,
        window[PATIENT_KEY],
        window[list(SUBGROUP_ATTRIBUTES)],
        rounds=settings.bootstrap_rounds,
        confidence_level=settings.confidence_level,
        top_fraction=settings.top_risk_fraction,
        seed=settings.seed,
    )


def _log_figures(
    model: TrainedModel,
    labels: np.ndarray,
    scores: np.ndarray,
    baseline_scores: np.ndarray,
    report: EvalReport,
) -> None:
    curves = {"LightGBM pipeline": scores, "logistic baseline": baseline_scores}
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        plots.plot_roc(labels, curves, out / "roc.png")
        plots.plot_precision_recall(labels, curves, out / "precision_recall.png")
        plots.plot_calibration(labels, curves, out / "calibration.png")
        plots.plot_importance(feature_importance(model.pipeline), out / "feature_importance.png")
        (out / "evaluation.json").write_text(json.dumps(report.to_dict(), indent=2))
        mlflow.log_artifacts(folder, "evaluation")
