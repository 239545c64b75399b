"""Model quality on the temporal test window, side by side with simple baselines.

Prepares the extract named by HEALTHPREDICT_DATA_SOURCE into a temporary folder, trains on the
initial window (the oldest 70 % of encounters unless HEALTHPREDICT_INITIAL_WINDOW_FRACTION says
otherwise), and evaluates on the newest 20 %, which no model sees during training, tuning or
selection. Prints every metric with its 95 % patient-grouped bootstrap interval, and the
training time of the full pipeline.

    make benchmark    # or: .venv/bin/python benchmarks/model_quality.py
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from lightgbm import LGBMClassifier

from common import prepared_windows
from healthpredict.data.prepare import TARGET
from healthpredict.data.pseudonym import PATIENT_KEY
from healthpredict.data.schema import INTEGER_COLUMNS
from healthpredict.modeling.train import ModelKind, features_of, fit_model, usable_cpus
from healthpredict.pipelines.train_and_register import evaluate_scores
from healthpredict.reporting.summary import format_metrics_table, format_subgroups
from healthpredict.settings import Settings

WINDOW_ENV = "HEALTHPREDICT_INITIAL_WINDOW_FRACTION"


def plain_lightgbm_scores(train: pd.DataFrame, test: pd.DataFrame, seed: int) -> np.ndarray:
    """LightGBM with default parameters on the raw columns (text as pandas categories)."""
    raw_train, raw_test = features_of(train).copy(), features_of(test).copy()
    for column in raw_train.columns:
        if column not in INTEGER_COLUMNS:
            categories = raw_train[column].astype("category").cat.categories
            raw_train[column] = pd.Categorical(raw_train[column], categories=categories)
            raw_test[column] = pd.Categorical(raw_test[column], categories=categories)
    model = LGBMClassifier(random_state=seed, n_jobs=usable_cpus(), verbose=-1)
    model.fit(raw_train, train[TARGET])
    return model.predict_proba(raw_test)[:, 1]


def main() -> None:
    """Prepare, train the three models, and print the comparison."""
    with tempfile.TemporaryDirectory() as folder:
        # The offline figure keeps its 70 % training window (the README's), whatever the
        # simulation's default; HEALTHPREDICT_INITIAL_WINDOW_FRACTION still overrides it.
        window = {} if WINDOW_ENV in os.environ else {"initial_window_fraction": 0.7}
        settings = Settings.from_flat(data_dir=Path(folder), **window)
        train, test = prepared_windows(settings)
    started = time.perf_counter()
    pipeline = fit_model(
        ModelKind.LIGHTGBM, train, cv_folds=settings.training.cv_folds, seed=settings.training.seed
    )
    pipeline_seconds = time.perf_counter() - started
    logistic = fit_model(
        ModelKind.LOGISTIC, train, cv_folds=settings.training.cv_folds, seed=settings.training.seed
    )
    reports = {
        "LightGBM pipeline": evaluate_scores(
            pipeline.pipeline.predict_proba(features_of(test))[:, 1], test, settings.training
        ),
        "plain LightGBM, raw": evaluate_scores(
            plain_lightgbm_scores(train, test, settings.training.seed), test, settings.training
        ),
        "logistic baseline": evaluate_scores(
            logistic.pipeline.predict_proba(features_of(test))[:, 1], test, settings.training
        ),
    }
    print(
        f"Training window: {len(train):,} encounters; temporal test window: {len(test):,} "
        f"encounters, {test[PATIENT_KEY].nunique():,} patients, "
        f"readmitted<30 {test[TARGET].mean():.2%}"
    )
    training = settings.training
    print(
        f"{training.confidence_level:.0%} patient-grouped bootstrap intervals, "
        f"{training.bootstrap_rounds} rounds; top risk = highest {training.top_risk_fraction:.0%}"
    )
    print(format_metrics_table(reports))
    print(
        f"\nFull pipeline training time on {usable_cpus()} CPU(s): {pipeline_seconds:.1f} s "
        f"(preprocessing, {settings.training.cv_folds} out-of-fold boosters for calibration, "
        f"final booster); "
        f"logistic baseline {logistic.fit_seconds:.1f} s"
    )
    print("\nSubgroups, LightGBM pipeline:")
    print(format_subgroups(reports["LightGBM pipeline"]))


if __name__ == "__main__":
    main()
