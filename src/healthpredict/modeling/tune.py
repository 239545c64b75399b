"""Hyper-parameter search with Ray Tune: Optuna TPE proposes, ASHA prunes, folds are by patient.

Each trial fits LightGBM on patient-grouped folds of the training window, one fold after the
other, and reports the running mean ROC-AUC after every fold; ASHA stops trials whose first
folds already trail the others. The preprocessing is encoded once per fold and per
preprocessing choice before the search and shared through Ray's object store, so trials spend
their time on boosting.

The objective is ROC-AUC rather than PR-AUC: it does not move with the readmission rate (which
drifts between folds and over time), it is far less noisy at an 11 % positive rate, and it is
the quantity the promotion gate compares. PR-AUC is still reported for every trial.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import sklearn
import yaml
from joblib import Parallel, delayed
from lightgbm import LGBMClassifier
from sklearn.metrics import average_precision_score, roc_auc_score

from healthpredict.data.prepare import TARGET
from healthpredict.data.pseudonym import PATIENT_KEY
from healthpredict.data.timeline import grouped_folds, patient_groups
from healthpredict.errors import HealthPredictError
from healthpredict.features import build_preprocessor
from healthpredict.modeling.train import features_of, usable_cpus

SEARCH_METRIC = "roc_auc"
_DISTRIBUTIONS = ("loguniform", "uniform", "randint", "qrandint", "lograndint", "choice")
logger = logging.getLogger(__name__)


class SearchError(HealthPredictError):
    """The search cannot start or did not finish cleanly."""


@dataclass(frozen=True)
class FoldMatrices:
    """One fold, already encoded: what a trial fits and scores."""

    train_x: np.ndarray
    train_y: np.ndarray
    valid_x: np.ndarray
    valid_y: np.ndarray


@dataclass(frozen=True)
class TrialRecord:
    """What one trial tried and scored."""

    trial_id: str
    config: dict[str, Any]
    fold_scores: list[float]
    fold_pr_auc: list[float]
    complete: bool

    @property
    def mean_score(self) -> float:
        """Mean ROC-AUC over the folds this trial reached."""
        return float(np.mean(self.fold_scores)) if self.fold_scores else float("nan")


@dataclass(frozen=True)
class SearchResult:
    """The outcome of a search."""

    best: TrialRecord
    trials: list[TrialRecord]
    wall_seconds: float
    n_folds: int

    @property
    def n_stopped_early(self) -> int:
        """Trials that ASHA (or the time budget) stopped before the last fold."""
        return sum(not trial.complete for trial in self.trials)


def load_search_space(path: Path | None = None) -> dict[str, dict[str, Any]]:
    """Read the search space YAML (packaged ``search_space.yaml`` by default) as Tune domains.

    Raises:
        SearchError: The space is empty or names an unknown distribution.
    """
    if path is None:
        text = resources.files("healthpredict.modeling").joinpath("search_space.yaml").read_text()
    elif not path.is_file():
        raise SearchError(f"search space file {path} does not exist")
    else:
        text = path.read_text()
    raw = yaml.safe_load(text) or {}
    if not isinstance(raw, dict) or "preprocessing" not in raw or "lightgbm" not in raw:
        raise SearchError("the search space needs a 'lightgbm' and a 'preprocessing' section")
    space = {
        section: {name: _domain(name, spec) for name, spec in (entries or {}).items()}
        for section, entries in raw.items()
    }
    if not any(space.values()):
        raise SearchError("the search space is empty: nothing to search")
    if not hasattr(space["preprocessing"].get("min_category_count"), "categories"):
        # Folds are encoded ahead of the search, once per listed preprocessing choice.
        raise SearchError("preprocessing.min_category_count must be a 'choice' of values")
    return space


def _domain(name: str, spec: dict[str, list[Any]]) -> Any:
    from ray import tune

    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in _DISTRIBUTIONS:
        raise SearchError(f"search space entry {name!r}: expected one of {_DISTRIBUTIONS}")
    kind, arguments = next(iter(spec.items()))
    return getattr(tune, kind)(*arguments)


def encode_folds(
    train: pd.DataFrame, min_category_counts: list[int], n_folds: int, seed: int
) -> dict[int, list[FoldMatrices]]:
    """Fit the preprocessor inside every patient-grouped fold, once per preprocessing choice.

    The encodings are independent, so they run in parallel processes.
    """
    folds = grouped_folds(train[TARGET], train[PATIENT_KEY], n_folds, seed)
    records, target = features_of(train), train[TARGET].to_numpy()
    groups = patient_groups(train[PATIENT_KEY])
    jobs = [(count, fold) for count in min_category_counts for fold in folds]
    matrices = Parallel(n_jobs=usable_cpus())(
        delayed(_encode_fold)(records, target, groups, fold, count) for count, fold in jobs
    )
    encoded: dict[int, list[FoldMatrices]] = {count: [] for count in min_category_counts}
    for (count, _), fold_matrices in zip(jobs, matrices, strict=True):
        encoded[count].append(fold_matrices)
    return encoded


def _encode_fold(
    records: pd.DataFrame,
    target: np.ndarray,
    groups: np.ndarray,
    fold: tuple[np.ndarray, np.ndarray],
    min_category_count: int,
) -> FoldMatrices:
    fit_rows, valid_rows = fold
    preprocessor = build_preprocessor(min_category_count=min_category_count)
    with sklearn.config_context(enable_metadata_routing=True):
        fit_x = preprocessor.fit_transform(
            records.iloc[fit_rows], target[fit_rows], groups=groups[fit_rows]
        )
    valid_x = preprocessor.transform(records.iloc[valid_rows])
    return FoldMatrices(
        fit_x.to_numpy(np.float32),
        target[fit_rows],
        valid_x.to_numpy(np.float32),
        target[valid_rows],
    )


def run_trial(
    config: dict[str, Any], encoded: dict[int, list[FoldMatrices]], n_jobs: int, seed: int
) -> None:
    """One trial, run by Ray: fit fold after fold and report the running mean after each.

    Each report also names the Ray node the trial ran on (``node_id``): on a cluster, nodes can
    share an IP and host name, which is all Tune's own ``node_ip`` and ``hostname`` tell apart.
    """
    import ray
    from ray import tune

    node_id = ray.get_runtime_context().get_node_id()
    folds = encoded[config["preprocessing"]["min_category_count"]]
    scores: list[float] = []
    for fold in folds:
        model = LGBMClassifier(
            **config["lightgbm"],
            subsample_freq=1,
            random_state=seed,
            n_jobs=n_jobs,
            deterministic=True,
            force_row_wise=True,
            verbose=-1,
        )
        model.fit(fold.train_x, fold.train_y)
        predicted = np.asarray(model.predict_proba(fold.valid_x))[:, 1]
        scores.append(float(roc_auc_score(fold.valid_y, predicted)))
        tune.report(
            {
                SEARCH_METRIC: float(np.mean(scores)),
                "fold_roc_auc": scores[-1],
                "fold_pr_auc": float(average_precision_score(fold.valid_y, predicted)),
                "folds_done": len(scores),
                "node_id": node_id,
            }
        )


def connect_ray(address: str | None) -> None:
    """Join the Ray cluster at ``address`` (or RAY_ADDRESS), else start a local Ray.

    ``address`` is a GCS address (``host:6379``, what ``ray start --head`` prints) or a Ray
    Client address (``ray://host:10001``). A cluster with token authentication (Ray's default
    once a token exists) also needs RAY_AUTH_MODE=token and its token in this process's
    environment before Ray is imported.

    Raises:
        SearchError: The cluster cannot be reached or refuses us, or Ray is already connected to
            a different cluster.
    """
    import ray
    from ray.exceptions import AuthenticationError

    address = address or os.environ.get("RAY_ADDRESS") or None
    if address and address != "auto":
        _check_reachable(address)
    if ray.is_initialized():
        _check_same_cluster(address)
        return
    try:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=usable_cpus(), include_dashboard=False, log_to_driver=False)
    except (AuthenticationError, ConnectionError, RuntimeError, ValueError) as error:
        raise SearchError(
            f"cannot reach the Ray cluster at {address}: {error}{_auth_hint(error)}"
        ) from error


def _auth_hint(error: BaseException) -> str:
    """The fix, when the cluster refused us for want of its token.

    Ray wraps the refusal in a RuntimeError whose message, not cause, holds the original.
    """
    from ray.exceptions import AuthenticationError

    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, AuthenticationError) or "InvalidAuthToken" in str(cause):
            return (
                " (the cluster wants its token: set RAY_AUTH_MODE=token before starting, and "
                "the token as RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)"
            )
        cause = cause.__cause__ or cause.__context__
    return ""


def _check_same_cluster(address: str | None) -> None:
    """Refuse to search on whatever Ray this process is connected to when another was named."""
    import ray

    if not address or address == "auto" or address.startswith("ray://"):
        return
    connected = str(ray.get_runtime_context().gcs_address)
    wanted, current = urlsplit(f"ray://{address}"), urlsplit(f"ray://{connected}")
    same_host = wanted.hostname in ("localhost", "127.0.0.1", "::1") or (
        socket.gethostbyname(wanted.hostname or "") == current.hostname
    )
    if wanted.port != current.port or not same_host:
        raise SearchError(
            f"Ray is already connected to {connected}, not {address}: call ray.shutdown() "
            "first, or leave ray_address unset to use the Ray already connected"
        )


def _check_reachable(address: str) -> None:
    """Fail in seconds, not minutes, when nothing listens at the cluster address."""
    parts = urlsplit(address if "://" in address else f"ray://{address}")
    if not parts.hostname or not parts.port:
        raise SearchError(f"Ray address {address!r} must be host:port or ray://host:port")
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=5).close()
    except OSError as error:
        raise SearchError(f"cannot reach the Ray cluster at {address}: {error}") from error
