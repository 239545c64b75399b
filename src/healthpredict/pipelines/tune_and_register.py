"""Flow: search hyper-parameters with Ray Tune, then train, evaluate and register the best.

The search is the step before :mod:`.train_and_register`'s: :func:`search_and_log` logs it as
a run tagged ``kind=search`` (its ``search_key`` and data hash) with every trial nested and the
selected parameters as ``search/outcome.json``; the selected configuration is then trained as
a child run of the search (:func:`selected_run`). ``healthpredict tune`` runs both in a row,
the training DAG one per task.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import mlflow
import pandas as pd

from healthpredict.data.timeline import INITIAL_WINDOW, load_window
from healthpredict.modeling.registry import configure_tracking
from healthpredict.modeling.search import SearchBudget, run_search
from healthpredict.modeling.train import default_params
from healthpredict.modeling.tune import SearchResult, connect_ray, load_search_space
from healthpredict.pipelines.train_and_register import (
    TrainingSummary,
    prepared_manifest,
    run_key,
    train_and_register,
)
from healthpredict.settings import Settings

logger = logging.getLogger(__name__)
SEARCH_ARTIFACT = "search/outcome.json"


@dataclass(frozen=True)
class TuneSummary:
    """The search, and the candidate refitted from its best configuration."""

    search: SearchResult
    training: TrainingSummary
    search_run_id: str


@dataclass(frozen=True)
class LoggedSearch:
    """A finished search and the run that logged it."""

    result: SearchResult
    run_id: str
    data_hash: str

    def outcome(self) -> dict[str, Any]:
        """What the training step needs (JSON-safe; logged as ``search/outcome.json``)."""
        return {
            "data_hash": self.data_hash,
            "search_run_id": self.run_id,
            "params": _plain(tuned_params(self.result.best.config)),
            "best_cv_roc_auc": float(self.result.best.mean_score),
            "trials": len(self.result.trials),
        }


def tune_and_register(settings: Settings) -> TuneSummary:
    """Search, log every trial as a nested run, refit the best configuration and register it.

    The candidate is the configuration this search selected (never the best run in history);
    it is registered as challenger (or champion when none exists and it clears the bar). A
    failed search registers nothing.

    Raises:
        SearchError: Bad search space or budget, unreachable Ray, or failed trials.
        TimelineError: No prepared data.
    """
    logged = search_and_log(settings)
    outcome = logged.outcome()
    training = train_and_register(settings, outcome["params"], **selected_run(logged.run_id))
    return TuneSummary(logged.result, training, logged.run_id)


def search_and_log(settings: Settings, data_hash: str | None = None) -> LoggedSearch:
    """Search on the initial window in a run of its own (joining or starting Ray).

    Args:
        settings: Settings in force.
        data_hash: The prepared data the caller expects (None: whatever is prepared).

    Raises:
        SearchError: Bad search space or budget, unreachable Ray, or failed trials.
        TimelineError: No prepared data, or not ``data_hash``.
    """
    space = load_search_space(settings.search.search_space_file)
    manifest = prepared_manifest(settings, data_hash)
    train = load_window(settings.data.prepared_dir, manifest, INITIAL_WINDOW)
    configure_tracking(settings)  # fail on an unreachable registry before searching
    connect_ray(settings.search.ray_address)
    key = search_key(settings, manifest.data_hash)
    with mlflow.start_run(run_name="tune") as parent:
        mlflow.set_tags({"kind": "search", "search_key": key, "data_hash": manifest.data_hash})
        mlflow.log_params(search_run_params(settings))
        result = search(train, space, settings)
        log_trials(result)
        logged = LoggedSearch(result, parent.info.run_id, manifest.data_hash)
        mlflow.log_dict(logged.outcome(), SEARCH_ARTIFACT)
    return logged


def selected_run(search_run_id: str) -> dict[str, Any]:
    """How the configuration a search selected is trained: a child run of the search,
    tagged with it (keyword arguments of ``train_and_register`` and ``train_candidate``)."""
    return {
        "run_name": "tuned-lightgbm",
        "parent_run_id": search_run_id or None,
        "tags": {"search_run_id": search_run_id, "selected_by": "tune"},
    }


def search_key(settings: Settings, data_hash: str) -> str:
    """What determines a search's result: data, space, budget, folds, concurrency, seed."""
    path = settings.search.search_space_file
    # A missing file is reported by load_search_space, with a better message than here.
    space = path.read_text() if path is not None and path.is_file() else str(path or "packaged")
    return run_key(
        "search",
        data_hash,
        space,
        settings.search.tune_trials,
        settings.search.tune_time_budget_seconds,
        settings.search.tune_folds,
        settings.search.tune_concurrency,
        settings.training.seed,
    )


def search(
    train: pd.DataFrame, space: dict[str, dict[str, Any]], settings: Settings
) -> SearchResult:
    """Run the search with the budgets, folds and seed in force (Ray must be connected)."""
    budget = SearchBudget(
        trials=settings.search.tune_trials,
        time_budget_seconds=settings.search.tune_time_budget_seconds,
        n_folds=settings.search.tune_folds,
        concurrency=settings.search.tune_concurrency,
        seed=settings.training.seed,
    )
    return run_search(train, space, budget, settings.data.data_dir / "ray_results")


def tuned_params(config: dict[str, Any]) -> dict[str, Any]:
    """The defaults.yaml structure with the searched sections replaced by ``config``."""
    params = default_params()
    params["lightgbm"] = {**config["lightgbm"], "subsample_freq": 1}
    params["preprocessing"] = dict(config["preprocessing"])
    return params


def search_run_params(settings: Settings) -> dict[str, Any]:
    """What a search run records about its budget and objective."""
    return {
        "trial_budget": settings.search.tune_trials,
        "seed": settings.training.seed,
        "time_budget_seconds": settings.search.tune_time_budget_seconds,
        "folds": settings.search.tune_folds,
        "concurrency": settings.search.tune_concurrency,
        "objective": "mean patient-grouped CV ROC-AUC",
    }


def log_trials(result: SearchResult) -> None:
    """Each trial as a nested run (logged from the driver, so workers need no tracking access)."""
    for number, trial in enumerate(result.trials, start=1):
        with mlflow.start_run(run_name=f"trial-{number:03d}", nested=True):
            mlflow.log_params(
                {
                    f"{section}.{key}": value
                    for section, values in trial.config.items()
                    for key, value in values.items()
                }
            )
            for step, (auc, pr_auc) in enumerate(
                zip(trial.fold_scores, trial.fold_pr_auc, strict=True)
            ):
                mlflow.log_metrics({"fold_roc_auc": auc, "fold_pr_auc": pr_auc}, step=step)
            mlflow.log_metric("cv_roc_auc", trial.mean_score)
            mlflow.set_tags({"complete": str(trial.complete), "ray_trial_id": trial.trial_id})
    mlflow.log_metrics(
        {
            "best_cv_roc_auc": result.best.mean_score,
            "trials": len(result.trials),
            "trials_stopped_early": result.n_stopped_early,
            "search_seconds": result.wall_seconds,
        }
    )


def searched_params(train: pd.DataFrame, settings: Settings) -> dict[str, Any]:
    """Hyper-parameters of the best configuration a search finds on ``train`` (no registering).

    Used by retrains whose policy asks for a search; Ray is joined or started as for ``tune``.
    """
    connect_ray(settings.search.ray_address)
    result = search(train, load_search_space(settings.search.search_space_file), settings)
    return tuned_params(result.best.config)


def _plain(value: Any) -> Any:
    """JSON-safe copy (Ray and Optuna hand back numpy numbers)."""
    return json.loads(json.dumps(value, default=lambda item: item.item()))
