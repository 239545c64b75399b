"""Flow: train the pipeline, evaluate it and its baseline on the test window, track, register.

The one training flow of Health Predict, in three steps that write one MLflow run shape.
``healthpredict train`` runs them in a row (:func:`train_and_register`), ``healthpredict tune``
after a search (:mod:`.tune_and_register`), and the training DAG one per task
(:mod:`healthpredict.orchestration.training`, which only adds reuse for retries):

1. :func:`train_candidate` fits LightGBM on the initial window in a run tagged
   ``kind=training`` (its ``training_key``, data hash and window), with the parameters, the
   data manifest, ``params.json``, the monitoring profile and the model (tag ``model_uri``).
2. :func:`evaluate_candidate` scores the test window into that run: metrics with intervals,
   the logistic baseline as a nested run, the figures and ``evaluation.json``, and last the tag
   ``evaluated``.
3. :func:`register_candidate` registers the run's model once (champion, challenger or no
   alias, by :func:`healthpredict.modeling.registry.register`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from healthpredict.data.prepare import TARGET
from healthpredict.data.pseudonym import PATIENT_KEY, SEQUENCE
from healthpredict.data.timeline import (
    INITIAL_WINDOW,
    Manifest,
    TimelineError,
    load_manifest,
    load_test_window,
    load_window,
)
from healthpredict.modeling.evaluate import SUBGROUP_ATTRIBUTES, EvalReport, evaluate_predictions
from healthpredict.modeling.importance import feature_importance
from healthpredict.modeling.registry import (
    RegisteredVersion,
    configure_tracking,
    load_pipeline,
    log_pipeline,
)
from healthpredict.modeling.train import ModelKind, default_params, features_of, fit_model
from healthpredict.pipelines.registration import COMPLETE_TAG, EVALUATION_FILE, register_once
from healthpredict.reporting import plots
from healthpredict.settings import Settings, TrainingSettings

if TYPE_CHECKING:
    from mlflow.entities import Run

logger = logging.getLogger(__name__)
INPUT_EXAMPLE_ROWS = 5
PARAMS_ARTIFACT = "params.json"
# Set last by the evaluation: the run's metrics and figures are complete.
EVALUATED_TAG = "evaluated"


@dataclass(frozen=True)
class Candidate:
    """A training run whose model is logged; plain values, so a DAG can pass it between tasks."""

    run_id: str
    model_uri: str
    data_hash: str
    params: dict[str, Any]
    training_window: str
    n_train: int
    fit_seconds: float

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-serialisable dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        """The candidate in ``data`` (other keys are ignored)."""
        return cls(**{field.name: data[field.name] for field in fields(cls)})

    @classmethod
    def of_run(cls, run: Run, params: dict[str, Any]) -> Candidate:
        """The candidate a finished training run holds (trained with ``params``)."""
        tags = run.data.tags
        return cls(
            run.info.run_id,
            tags["model_uri"],
            tags["data_hash"],
            params,
            tags["training_window"],
            int(run.data.params["n_train"]),
            float(run.data.metrics["fit_seconds"]),
        )


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
    parent_run_id: str | None = None,
) -> TrainingSummary:
    """Train LightGBM (and the logistic baseline) on the initial window, evaluate, register.

    Args:
        settings: Settings in force.
        params: Hyper-parameters in the ``defaults.yaml`` structure; the defaults when None.
        run_name: MLflow run name.
        tags: Extra run tags (see :func:`train_candidate`).
        parent_run_id: The run to nest this one under (the search that selected ``params``).

    Raises:
        TimelineError: No prepared data, or it differs from its manifest.
    """
    params = params or default_params()
    candidate = train_candidate(
        settings, params, run_name=run_name, tags=tags, parent_run_id=parent_run_id
    )
    report, baseline_report = evaluate_candidate(settings, candidate)
    registered, _ = register_candidate(settings, candidate.run_id, candidate.model_uri)
    return TrainingSummary(
        registered,
        report,
        baseline_report,
        candidate.fit_seconds,
        candidate.n_train,
        candidate.data_hash,
        candidate.training_window,
    )


def train_candidate(
    settings: Settings,
    params: dict[str, Any],
    *,
    run_name: str = "lightgbm",
    tags: dict[str, str] | None = None,
    parent_run_id: str | None = None,
    data_hash: str | None = None,
) -> Candidate:
    """Step 1: fit the pipeline on the initial window and log it in a new training run.

    Args:
        settings: Settings in force.
        params: Hyper-parameters in the ``defaults.yaml`` structure.
        run_name: MLflow run name.
        tags: Extra run tags; ``search_run_id`` and ``selected_by`` also go on the version.
        parent_run_id: The run to nest this one under; else nested when a run is active.
        data_hash: The prepared data the caller expects (None: whatever is prepared).

    Raises:
        TimelineError: No prepared data, it differs from its manifest, or from ``data_hash``.
    """
    manifest = prepared_manifest(settings, data_hash)
    train = load_window(settings.data.prepared_dir, manifest, INITIAL_WINDOW)
    window = training_window_tag(train)
    configure_tracking(settings)
    context = {
        "kind": "training",
        "training_key": training_key(settings, manifest.data_hash, params),
        "data_hash": manifest.data_hash,
        "training_window": window,
        **(tags or {}),
    }
    nested = mlflow.active_run() is not None
    with mlflow.start_run(run_name=run_name, parent_run_id=parent_run_id, nested=nested) as run:
        mlflow.set_tags(context)
        _log_inputs(manifest, params, settings, len(train))
        model = fit_model(
            ModelKind.LIGHTGBM, train, params, settings.training.cv_folds, settings.training.seed
        )
        mlflow.log_metric("fit_seconds", model.fit_seconds)
        log_monitoring_profile(model.pipeline, train, manifest, settings)
        model_uri = log_pipeline(model.pipeline, features_of(train).head(INPUT_EXAMPLE_ROWS))
        mlflow.set_tag("model_uri", model_uri)
    return Candidate(
        run.info.run_id,
        model_uri,
        manifest.data_hash,
        params,
        window,
        len(train),
        model.fit_seconds,
    )


def evaluate_candidate(settings: Settings, candidate: Candidate) -> tuple[EvalReport, EvalReport]:
    """Step 2: evaluate the logged model and the logistic baseline on the test window.

    The metrics, the baseline (a nested run), the figures and ``evaluation.json`` go into the
    candidate's run, then the ``evaluated`` tag. Returns the model's and the baseline's reports.

    Raises:
        TimelineError: The prepared data is no longer the candidate's.
    """
    manifest = prepared_manifest(settings, candidate.data_hash)
    train = load_window(settings.data.prepared_dir, manifest, INITIAL_WINDOW)
    test = load_test_window(settings.data.prepared_dir, manifest)
    configure_tracking(settings)
    pipeline = load_pipeline(candidate.model_uri)
    scores = pipeline.predict_proba(features_of(test))[:, 1]
    report = evaluate_scores(scores, test, settings.training)
    nested = mlflow.active_run() is not None
    with mlflow.start_run(run_id=candidate.run_id, nested=nested):
        mlflow.log_param("n_test", len(test))
        mlflow.log_metrics(report.flat_metrics())
        baseline_report, baseline_scores = _train_baseline(train, test, candidate.params, settings)
        _log_figures(pipeline, test[TARGET].to_numpy(), scores, baseline_scores, report)
        mlflow.set_tag(EVALUATED_TAG, "true")  # last: marks the evaluation complete
    return report, baseline_report


def register_candidate(
    settings: Settings, run_id: str, model_uri: str
) -> tuple[RegisteredVersion, bool]:
    """Step 3: register the evaluated run's model; the version, and whether it already was.

    A complete version registered from this run earlier is reused; one a failure left
    half-registered is replaced (:func:`healthpredict.pipelines.registration.register_once`).
    """
    from mlflow import MlflowClient

    described = register_once(settings, run_id, model_uri)
    name, version = settings.tracking.model_name, described["version"]
    reason = MlflowClient().get_model_version(name, version).tags.get(COMPLETE_TAG, "")
    registered = RegisteredVersion(name, version, run_id, described["alias"], reason)
    return registered, bool(described["reused"])


def prepared_manifest(settings: Settings, data_hash: str | None = None) -> Manifest:
    """The prepared data's manifest, which must still be ``data_hash`` when one is given.

    Raises:
        TimelineError: No prepared data, or another run re-cut it since ``data_hash``.
    """
    manifest = load_manifest(settings.data.prepared_dir)
    if data_hash is not None and manifest.data_hash != data_hash:
        raise TimelineError(
            f"the prepared data changed during this run (data hash {data_hash}, now "
            f"{manifest.data_hash}): run again from the preparation"
        )
    return manifest


def run_key(*parts: Any) -> str:
    """A short stable hash of what determines a run's result (tagged on the run)."""
    payload = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def training_key(settings: Settings, data_hash: str, params: dict[str, Any]) -> str:
    """What determines a training run's model: data, parameters, folds and seed."""
    return run_key(
        "training", data_hash, params, settings.training.seed, settings.training.cv_folds
    )


def log_monitoring_profile(
    pipeline: Pipeline, train: pd.DataFrame, manifest: Manifest, settings: Settings
) -> None:
    """Log the model's monitoring profile (:mod:`healthpredict.pipelines.profile`) into the
    active run.

    Its baseline predictions are on the first production batch, the encounters that follow
    the training window: the model has not seen them, and only their predicted risks are kept.
    """
    from healthpredict.pipelines import profile

    unseen = load_window(settings.data.prepared_dir, manifest, manifest.batch_names[0])
    profile.log_to_run(profile.build(pipeline, train, unseen, settings.monitoring))


def training_window_tag(train: pd.DataFrame) -> str:
    """The tag recording which encounters a model was trained on (``sequence first-last``)."""
    return f"sequence {train[SEQUENCE].iloc[0]}-{train[SEQUENCE].iloc[-1]}"


def _train_baseline(
    train: pd.DataFrame, test: pd.DataFrame, params: dict[str, Any], settings: Settings
) -> tuple[EvalReport, np.ndarray]:
    """The logistic-regression baseline, as a nested run beside the main model."""
    with mlflow.start_run(run_name="logistic-baseline", nested=True):
        baseline = fit_model(
            ModelKind.LOGISTIC, train, params, settings.training.cv_folds, settings.training.seed
        )
        scores = baseline.pipeline.predict_proba(features_of(test))[:, 1]
        report = evaluate_scores(scores, test, settings.training)
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
    manifest: Manifest, params: dict[str, Any], settings: Settings, n_train: int
) -> None:
    mlflow.log_params(
        {
            **flat_params(params),
            "cv_folds": settings.training.cv_folds,
            "seed": settings.training.seed,
            "n_train": n_train,
        }
    )
    mlflow.log_dict(json.loads(manifest.to_json()), "data/manifest.json")
    # The exact hyper-parameters, typed, so a retrain (healthpredict simulate) can reuse them.
    mlflow.log_dict(params, PARAMS_ARTIFACT)


def evaluate_scores(
    scores: np.ndarray, window: pd.DataFrame, training: TrainingSettings
) -> EvalReport:
    """Evaluate probabilities for a prepared window the way every report here does."""
    return evaluate_predictions(
        window[TARGET],
        scores,
        window[PATIENT_KEY],
        window[list(SUBGROUP_ATTRIBUTES)],
        rounds=training.bootstrap_rounds,
        confidence_level=training.confidence_level,
        top_fraction=training.top_risk_fraction,
        seed=training.seed,
    )


def _log_figures(
    pipeline: Pipeline,
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
        plots.plot_importance(feature_importance(pipeline), out / "feature_importance.png")
        (out / EVALUATION_FILE).write_text(json.dumps(report.to_dict(), indent=2))
        mlflow.log_artifacts(folder, "evaluation")
