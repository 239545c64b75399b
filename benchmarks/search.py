"""Hyper-parameter search on the real training window, and what it is worth on the test window.

Runs the search exactly as `healthpredict tune` does (trial and time budgets from settings:
40 trials, 170 s by default), refits the best configuration on the whole training window, and
compares it with the untuned pipeline on the temporal test window with a paired,
patient-grouped bootstrap of the ROC-AUC difference.

    make benchmark-search    # or: .venv/bin/python benchmarks/search.py
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import ray

from common import prepared_windows
from healthpredict.data.prepare import TARGET
from healthpredict.data.pseudonym import PATIENT_KEY
from healthpredict.modeling.gate import GatePolicy, compare
from healthpredict.modeling.train import ModelKind, features_of, fit_model
from healthpredict.modeling.tune import connect_ray, load_search_space
from healthpredict.pipelines.tune_and_register import search as search_with_settings
from healthpredict.pipelines.tune_and_register import tuned_params
from healthpredict.settings import Settings


def main() -> None:
    """Prepare, search, refit, compare, print."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings.from_flat(data_dir=Path(folder))
        train, test = prepared_windows(settings)
        started = time.perf_counter()
        connect_ray(settings.search.ray_address)
        ray_seconds = time.perf_counter() - started
        search = search_with_settings(train, load_search_space(), settings)
        ray.shutdown()
    tuned = fit_model(
        ModelKind.LIGHTGBM,
        train,
        tuned_params(search.best.config),
        settings.training.cv_folds,
        settings.training.seed,
    )
    untuned = fit_model(
        ModelKind.LIGHTGBM, train, None, settings.training.cv_folds, settings.training.seed
    )
    records = features_of(test)
    comparison = compare(
        test[TARGET].to_numpy(),
        untuned.pipeline.predict_proba(records)[:, 1],
        tuned.pipeline.predict_proba(records)[:, 1],
        test[PATIENT_KEY],
        GatePolicy(0.0, 0.0, 0.0, rounds=1000, seed=settings.training.seed),
    )
    budget = settings.search
    print(
        f"Search: {len(search.trials)} trials run, {search.n_stopped_early} stopped early "
        f"(ASHA), wall time {search.wall_seconds:.0f} s (+ {ray_seconds:.0f} s Ray start), "
        f"budget {budget.tune_trials} trials / {budget.tune_time_budget_seconds:.0f} s, "
        f"concurrency {budget.tune_concurrency}"
    )
    print(
        f"Best mean CV ROC-AUC ({search.n_folds} patient-grouped folds of the training window): "
        f"{search.best.mean_score:.4f}"
    )
    print(f"Best configuration: {search.best.config}")
    print(
        f"Temporal test window ({len(test):,} encounters): ROC-AUC untuned "
        f"{comparison.champion_roc_auc:.4f}, tuned {comparison.challenger_roc_auc:.4f}; "
        f"difference {comparison.auc_gain} (95 % paired patient-grouped bootstrap)"
    )
    print(
        f"ECE untuned {comparison.champion_ece:.4f}, tuned {comparison.challenger_ece:.4f}; "
        f"refit time {tuned.fit_seconds:.1f} s"
    )


if __name__ == "__main__":
    main()
