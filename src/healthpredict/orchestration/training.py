"""Task functions of the training DAG: prepare -> search -> train -> evaluate -> register -> gate.

Each task is one step of the CLI's training flow (:mod:`healthpredict.pipelines.
tune_and_register` and :mod:`healthpredict.pipelines.train_and_register`), so the runs, their
params, metrics, tags and artifacts are the ones ``healthpredict tune`` writes. What passes
between tasks is a data hash, a run id, a model URI, a version number. What a task adds is
reuse, keyed on what determines its result, so that a retried task or a repeated run finds
the result of an earlier attempt:

- prepare: deterministic for a source and salt; the timeline is swapped in atomically.
- search: a finished search with the same ``search_key`` (data hash, search space, budget,
  seed) is reused.
- train: a finished training run with the same ``training_key`` (data hash, parameters,
  folds, seed) is reused.
- evaluate: a run already evaluated is not evaluated again.
- register: a version already registered from this run is reused; one left half-registered by
  a failed attempt (no tags, never aliased: the alias is written last) is deleted and the
  model registered again.
- gate: a verdict already recorded against the same champion is reused.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from healthpredict.modeling.tracking import registry_errors
from healthpredict.settings import Settings, get_settings

if TYPE_CHECKING:
    from mlflow.entities import Run

# The test metrics a finished evaluation hands on (the run holds them all).
_SUMMARY_METRICS = ("test_roc_auc", "test_pr_auc", "test_brier")


def prepare() -> dict[str, Any]:
    """Task: validate, clean and cut the extract; return the data hash and window sizes."""
    from healthpredict.pipelines.prepare_data import prepare_data

    manifest = prepare_data(get_settings()).manifest
    return {
        "data_hash": manifest.data_hash,
        "windows": {window.name: window.rows for window in manifest.windows},
    }


def search(prepared: dict[str, Any]) -> dict[str, Any]:
    """Task: search hyper-parameters with Ray Tune; return the selected parameters."""
    import mlflow

    from healthpredict.pipelines import tune_and_register as flow

    data_hash = prepared["data_hash"]
    with _tracking() as settings:
        previous = _finished_run(settings, "search_key", flow.search_key(settings, data_hash))
        if previous is not None:
            uri = f"runs:/{previous.info.run_id}/{flow.SEARCH_ARTIFACT}"
            return {**mlflow.artifacts.load_dict(uri), "reused": True}
        with _ray_session(settings):
            logged = flow.search_and_log(settings, data_hash)
    return {**logged.outcome(), "reused": False}


def train(searched: dict[str, Any]) -> dict[str, Any]:
    """Task: fit the selected parameters and log the model; return its run and URI."""
    from healthpredict.pipelines import train_and_register as flow
    from healthpredict.pipelines.tune_and_register import selected_run

    data_hash, params = searched["data_hash"], searched["params"]
    with _tracking() as settings:
        previous = _finished_run(
            settings, "training_key", flow.training_key(settings, data_hash, params)
        )
        if previous is not None:
            return {**flow.Candidate.of_run(previous, params).to_dict(), "reused": True}
        run = selected_run(searched.get("search_run_id", ""))
        candidate = flow.train_candidate(settings, params, data_hash=data_hash, **run)
    return {**candidate.to_dict(), "reused": False}


def evaluate(trained: dict[str, Any]) -> dict[str, Any]:
    """Task: score the temporal test window, log metrics, baseline and figures to the run."""
    from mlflow import MlflowClient

    from healthpredict.pipelines import train_and_register as flow

    with _tracking() as settings:
        run = MlflowClient().get_run(trained["run_id"])
        if run.data.tags.get(flow.EVALUATED_TAG) == "true":
            return _evaluated(trained, run.data.metrics, reused=True)
        report, _ = flow.evaluate_candidate(settings, flow.Candidate.from_dict(trained))
    return _evaluated(trained, report.flat_metrics(), reused=False)


def register(evaluated: dict[str, Any]) -> dict[str, Any]:
    """Task: register the evaluated model; it becomes challenger (or the first champion)."""
    from healthpredict.pipelines.train_and_register import register_candidate

    with _tracking() as settings:
        registered, reused = register_candidate(
            settings, evaluated["run_id"], evaluated["model_uri"]
        )
    return {
        "version": registered.version,
        "alias": registered.alias,
        "run_id": registered.run_id,
        "reused": reused,
    }


def gate(registered: dict[str, Any]) -> dict[str, Any]:
    """Task: the promotion gate for the version just registered; records, never moves aliases."""
    from healthpredict.modeling.registry import CHALLENGER
    from healthpredict.orchestration.gate import decide

    version = registered["version"]
    if registered["alias"] != CHALLENGER:
        what = "is the first champion" if registered["alias"] else "holds no alias"
        return {
            "version": version,
            "promote": False,
            "gated": False,
            "reason": f"v{version} {what}",
        }
    settings = get_settings()
    with registry_errors(settings):
        return {**decide(settings, version), "gated": True}


def delivery_request(decision: dict[str, Any]) -> dict[str, Any] | None:
    """Task (short-circuit): the delivery DAG's conf when the challenger passed, else None."""
    if not decision.get("promote"):
        return None
    return {"model_version": decision["version"]}


@contextmanager
def _tracking() -> Iterator[Settings]:
    """The settings in force, MLflow pointed at their registry, its failures named as such."""
    from healthpredict.modeling.registry import configure_tracking

    settings = get_settings()
    with registry_errors(settings):
        configure_tracking(settings)
        yield settings


def _finished_run(settings: Settings, tag: str, value: str) -> Run | None:
    """The newest finished run of this experiment carrying ``tag = value``."""
    import mlflow

    experiment = mlflow.get_experiment_by_name(settings.tracking.experiment_name)
    if experiment is None:
        return None
    runs = mlflow.search_runs(
        [experiment.experiment_id],
        f"tags.{tag} = '{value}' and attributes.status = 'FINISHED'",
        max_results=1,
        order_by=["attributes.start_time DESC"],
        output_format="list",
    )
    return runs[0] if runs else None


@contextmanager
def _ray_session(settings: Settings) -> Iterator[None]:
    """Connect Ray for the search; shut a Ray this task started down when it ends."""
    import ray

    from healthpredict.modeling.tune import connect_ray

    started = not ray.is_initialized()
    connect_ray(settings.search.ray_address)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def _evaluated(
    trained: dict[str, Any], metrics: dict[str, float], *, reused: bool
) -> dict[str, Any]:
    return {
        **{k: v for k, v in trained.items() if k != "reused"},
        "metrics": {k: float(metrics[k]) for k in _SUMMARY_METRICS if k in metrics},
        "reused": reused,
    }
