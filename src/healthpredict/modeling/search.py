"""The search driver: Ray Tune runs the trials of :mod:`healthpredict.modeling.tune`.

Optuna TPE proposes, ASHA stops trials whose first folds trail (a rung per fold), and the best
trial that completed every fold is selected. Progress is one log line every few seconds.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from healthpredict.modeling.train import usable_cpus
from healthpredict.modeling.tune import (
    SEARCH_METRIC,
    SearchError,
    SearchResult,
    TrialRecord,
    encode_folds,
    run_trial,
)

logger = logging.getLogger(__name__)
PROGRESS_INTERVAL_SECONDS = 10.0


@dataclass(frozen=True)
class SearchBudget:
    """How much searching to do, and how."""

    trials: int
    time_budget_seconds: float
    n_folds: int
    concurrency: int
    seed: int


def run_search(
    train: pd.DataFrame, space: dict[str, dict[str, Any]], budget: SearchBudget, storage_dir: Path
) -> SearchResult:
    """Search the LightGBM pipeline's hyper-parameters on the training window.

    Ray must be connected first (:func:`healthpredict.modeling.tune.connect_ray`).

    Raises:
        SearchError: Bad budget, or any trial failed (a search with crashed trials is not
            evidence for anything), or no trial completed every fold.
    """
    if budget.trials < 1 or budget.time_budget_seconds <= 0:
        raise SearchError("the trial budget and the time budget must both be positive")
    started = time.perf_counter()
    counts = list(space["preprocessing"]["min_category_count"].categories)
    encoded = encode_folds(train, counts, budget.n_folds, budget.seed)
    grid = _tuner(encoded, space, budget, storage_dir).fit()
    if grid.errors:
        raise SearchError(f"{len(grid.errors)} trial(s) failed; first: {grid.errors[0]}")
    records = [_record(grid[index], budget.n_folds) for index in range(len(grid))]
    complete = [record for record in records if record.complete]
    if not complete:
        raise SearchError("no trial completed every fold within the budget: raise the time budget")
    best = max(complete, key=lambda record: record.mean_score)
    return SearchResult(best, records, time.perf_counter() - started, budget.n_folds)


def _tuner(encoded: Any, space: dict[str, Any], budget: SearchBudget, storage_dir: Path) -> Any:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    n_jobs = max(1, usable_cpus() // budget.concurrency)
    trainable = tune.with_parameters(run_trial, encoded=encoded, n_jobs=n_jobs, seed=budget.seed)
    return tune.Tuner(
        tune.with_resources(trainable, {"cpu": n_jobs}),
        param_space={**space, "_n_folds": budget.n_folds},
        tune_config=tune.TuneConfig(
            metric=SEARCH_METRIC,
            mode="max",
            num_samples=budget.trials,
            search_alg=OptunaSearch(seed=budget.seed),
            max_concurrent_trials=budget.concurrency,
            # Keep the top third at each rung: most weak trials stop after their first fold.
            scheduler=ASHAScheduler(max_t=budget.n_folds, grace_period=1, reduction_factor=3),
            time_budget_s=budget.time_budget_seconds,
            # One long-lived worker: a fresh process per trial costs seconds of imports.
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=f"search-{int(time.time())}",
            storage_path=str(storage_dir.resolve()),
            verbose=0,
            callbacks=[_progress_callback(budget.trials)],
        ),
    )


def _progress_callback(total: int) -> Any:
    """A Ray Tune callback logging one line now and then: trials done, pruned, best so far."""
    from ray import tune

    class ProgressLine(tune.Callback):
        def __init__(self) -> None:
            self.done = 0
            self.pruned = 0
            self.best = float("nan")
            self.last_line = 0.0

        def on_trial_complete(
            self, iteration: int, trials: list[Any], trial: Any, **info: Any
        ) -> None:
            self.done += 1
            result = trial.last_result or {}
            if result.get("folds_done", 0) < trial.config.get("_n_folds", 0):
                self.pruned += 1
            elif not result.get(SEARCH_METRIC, 0) <= self.best:
                self.best = float(result[SEARCH_METRIC])
            if time.monotonic() - self.last_line >= PROGRESS_INTERVAL_SECONDS or self.done == total:
                self.last_line = time.monotonic()
                logger.info(
                    "search: %d/%d trials done, %d stopped early, best ROC-AUC %.4f",
                    self.done,
                    total,
                    self.pruned,
                    self.best,
                )

    return ProgressLine()


def _record(result: Any, n_folds: int) -> TrialRecord:
    history = result.metrics_dataframe
    if history is None or "fold_roc_auc" not in history:  # stopped before its first fold ended
        history = pd.DataFrame({"fold_roc_auc": [], "fold_pr_auc": []})
    config = {key: value for key, value in result.config.items() if not key.startswith("_")}
    return TrialRecord(
        trial_id=str(result.metrics.get("trial_id", "")),
        config=config,
        fold_scores=[float(v) for v in history["fold_roc_auc"]],
        fold_pr_auc=[float(v) for v in history["fold_pr_auc"]],
        complete=len(history) >= n_folds,
    )
