"""Build and fit the model pipelines: LightGBM (main) and logistic regression (baseline).

Each model is one scikit-learn ``Pipeline``: the shared preprocessor, then the classifier. The
LightGBM classifier is calibrated on out-of-fold predictions from patient-grouped folds, then
refitted on the whole window (``CalibratedClassifierCV(ensemble=False)``): one booster to
serve, and probabilities that are honest risks.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd
import sklearn
import yaml
from lightgbm import LGBMClassifier
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline

from healthpredict.data.prepare import TARGET
from healthpredict.data.pseudonym import PATIENT_KEY
from healthpredict.data.schema import FEATURE_COLUMNS
from healthpredict.data.timeline import patient_groups
from healthpredict.features import build_preprocessor


class ModelKind(StrEnum):
    """The model families Health Predict trains."""

    LIGHTGBM = "lightgbm"
    LOGISTIC = "logistic"


@dataclass(frozen=True)
class TrainedModel:
    """A fitted pipeline with what it was trained with."""

    kind: ModelKind
    pipeline: Pipeline
    params: dict[str, Any]
    n_rows: int
    fit_seconds: float


def usable_cpus() -> int:
    """CPUs this process may use; LightGBM's n_jobs=-1 oversubscribes small VMs badly."""
    return len(os.sched_getaffinity(0))


def default_params() -> dict[str, Any]:
    """Hyper-parameters from the packaged ``defaults.yaml``."""
    text = resources.files("healthpredict.modeling").joinpath("defaults.yaml").read_text()
    return dict(yaml.safe_load(text))


def features_of(frame: pd.DataFrame) -> pd.DataFrame:
    """The raw contract feature columns of a prepared frame, in contract order."""
    return frame.loc[:, list(FEATURE_COLUMNS)]


def build_pipeline(kind: ModelKind, params: dict[str, Any], cv_folds: int, seed: int) -> Pipeline:
    """Build the unfitted pipeline for ``kind``.

    Args:
        kind: Model family.
        params: The defaults.yaml structure: family sections, ``preprocessing`` options for
            :func:`build_preprocessor`, and ``calibration_method``.
        cv_folds: Patient-grouped folds used to calibrate LightGBM out of fold.
        seed: Random seed for the model and the folds.
    """
    preprocessing = params.get("preprocessing", {})
    if kind is ModelKind.LOGISTIC:
        model = LogisticRegression(**params["logistic"], random_state=seed)
        features = build_preprocessor(linear=True, **preprocessing)
        return Pipeline([("features", features), ("model", model)])
    # One thread per booster and the folds fitted in parallel processes: LightGBM's OpenMP
    # threads spin-wait and slow down several-fold when anything else shares the two cores.
    booster = LGBMClassifier(**params["lightgbm"], random_state=seed, n_jobs=1, verbose=-1)
    calibrated = CalibratedClassifierCV(
        booster,
        method=params.get("calibration_method", "isotonic"),
        cv=_calibration_splitter(cv_folds, seed),
        ensemble=False,
        n_jobs=usable_cpus(),
    )
    return Pipeline([("features", build_preprocessor(**preprocessing)), ("model", calibrated)])


def fit_model(
    kind: ModelKind,
    train: pd.DataFrame,
    params: dict[str, Any] | None = None,
    cv_folds: int = 5,
    seed: int = 42,
) -> TrainedModel:
    """Fit one pipeline on a prepared training window.

    The patient keys travel through scikit-learn metadata routing to every fold inside the
    pipeline (target encoding, calibration), so no patient is on both sides of a fold.
    """
    params = params or default_params()
    pipeline = build_pipeline(kind, params, cv_folds, seed)
    groups = patient_groups(train[PATIENT_KEY])
    if kind is ModelKind.LIGHTGBM:
        # scikit-learn 1.9 does not route groups to the splitter when ensemble=False, so the
        # calibrator gets the patient-grouped splits themselves.
        splitter = _calibration_splitter(cv_folds, seed)
        pipeline.set_params(model__cv=list(splitter.split(np.zeros(len(groups)), groups=groups)))
    started = time.perf_counter()
    with sklearn.config_context(enable_metadata_routing=True):
        pipeline.fit(features_of(train), train[TARGET], groups=groups)
    elapsed = time.perf_counter() - started
    if kind is ModelKind.LIGHTGBM:
        # Keep the saved model small and its parameters readable: the splitter, not row indices.
        pipeline.set_params(model__cv=_calibration_splitter(cv_folds, seed))
    return TrainedModel(kind, pipeline, params, len(train), elapsed)


def _calibration_splitter(cv_folds: int, seed: int) -> GroupKFold:
    return GroupKFold(n_splits=cv_folds, shuffle=True, random_state=seed)
