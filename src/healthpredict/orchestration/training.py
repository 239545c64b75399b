"""Task functions of the training DAG: prepare -> search -> train -> evaluate -> register -> gate.

The CLI's flows do several of these steps in one MLflow run; here each is its own task, so a
failure is retried where it happened and not from the start. What passes between tasks is a
data hash, a run id, a model URI, a version number.

Every step is idempotent, keyed on what determines its result:

- prepare: deterministic for a source and salt; the timeline is swapped in atomically.
- search: a finished search with the same data hash, search space, budget and seed is reused.
- train: a finished training run with the same data hash, parameters, folds and seed is reused.
- evaluate: a run already evaluated is not evaluated again.
- register: a version already registered from this run is reused; one left half-registered by
  a failed attempt (no tags, never aliased: the alias is written last) is deleted and the
  model registered again.
- gate: a verdict already recorded against the same champion is reused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from healthpredict.orchestration.registration import EVALUATION_FILE
from healthpredict.orchestration.tracking import registry_errors
from healthpredict.settings import Settings, get_settings

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.entities import Run

    from healthpredict.modeling.evaluate import EvalReport

SEARCH_ARTIFACT = "search/outcome.json"


def prepare() -> dict[str, Any]:
    """Task: validate, clean and cut the extract; return the data hash and window sizes."""
    from healthpredict.pipelines.prepare_data import prepare_data

    summary = prepare_data(get_settings())
    manifest = summary.manifest
    return {
        "data_hash": manifest.data_hash,
        "windows": {window.name: window.rows for window in manifest.windows},
    }


def search(prepared: dict[str, Any]) -> dict[str, Any]:
    """Task: search hyper-parameters with Ray Tune; return the selected parameters."""
    import mlflow

    from healthpredict.data.timeline import INITIAL_WINDOW
    from healthpredict.modeling.registry import configure_tracking
    from healthpredict.modeling.tune import load_search_space
    from healthpredict.pipelines.tune_and_register import (
        log_trials,
        search_run_params,
        tuned_params,
    )
    from healthpredict.pipelines.tune_and_register import search as run_search

    settings = get_settings()
    data_hash = prepared["data_hash"]
    key = search_key(settings, data_hash)
    with registry_errors(settings):
        configure_tracking(settings)
        previous = _finished_run("search_key", key)
        if previous is not None:
            outcome = mlflow.artifacts.load_dict(f"runs:/{previous.info.run_id}/{SEARCH_ARTIFACT}")
            return {**outcome, "reused": True}
        space = load_search_space(settings.search_space_file)
        train = _window(settings, data_hash, INITIAL_WINDOW)
        with _ray_session(settings), mlflow.start_run(run_name="tune") as parent:
            mlflow.set_tags({"kind": "search", "search_key": key, "data_hash": data_hash})
            mlflow.log_params(search_run_params(settings))
            result = run_search(train, space, settings)
            log_trials(result)
            outcome = {
                "data_hash": data_hash,
                "search_run_id": parent.info.run_id,
                "params": _plain(tuned_params(result.best.config)),
                "best_cv_roc_auc": result.best.mean_score,
                "trials": len(result.trials),
            }
            mlflow.log_dict(outcome, SEARCH_ARTIFACT)
    return {**outcome, "reused": False}


def train(searched: dict[str, Any]) -> dict[str, Any]:
    """Task: fit the pipeline with the selected parameters and log it; return its run and URI."""
    import mlflow

    from healthpredict.data.timeline import INITIAL_WINDOW, load_manifest
    from healthpredict.modeling.registry import configure_tracking, log_pipeline
    from healthpredict.modeling.train import ModelKind, features_of, fit_model
    from healthpredict.pipelines.train_and_register import (
        INPUT_EXAMPLE_ROWS,
        PARAMS_ARTIFACT,
        flat_params,
        log_monitoring_profile,
        training_window_tag,
    )

    settings = get_settings()
    data_hash, params = searched["data_hash"], searched["params"]
    key = _key("train", data_hash, params, settings.seed, settings.cv_folds)
    with registry_errors(settings):
        configure_tracking(settings)
        previous = _finished_run("training_key", key)
        if previous is not None:
            return _trained(previous.info.run_id, previous.data.tags["model_uri"], data_hash, True)
        window = _window(settings, data_hash, INITIAL_WINDOW)
        with mlflow.start_run(run_name="tuned-lightgbm") as run:
            mlflow.set_tags(
                {
                    "kind": "training",
                    "training_key": key,
                    "data_hash": data_hash,
                    "training_window": training_window_tag(window),
                    "search_run_id": searched.get("search_run_id", ""),
                    "selected_by": "tune",
                }
            )
            mlflow.log_params(
                {**flat_params(params), "cv_folds": settings.cv_folds, "seed": settings.seed}
            )
            mlflow.log_dict(params, PARAMS_ARTIFACT)  # typed, for a later retrain to reuse
            model = fit_model(ModelKind.LIGHTGBM, window, params, settings.cv_folds, settings.seed)
            mlflow.log_metrics({"fit_seconds": model.fit_seconds, "n_train": len(window)})
            manifest = load_manifest(settings.prepared_dir)
            log_monitoring_profile(model.pipeline, window, manifest, settings)
            model_uri = log_pipeline(model.pipeline, features_of(window).head(INPUT_EXAMPLE_ROWS))
            mlflow.set_tag("model_uri", model_uri)
    return _trained(run.info.run_id, model_uri, data_hash, False)


def evaluate(trained: dict[str, Any]) -> dict[str, Any]:
    """Task: score the temporal test window, log metrics and figures to the training run."""
    import mlflow
    from mlflow import MlflowClient

    from healthpredict.data.timeline import load_manifest, load_test_window
    from healthpredict.modeling.registry import configure_tracking, load_pipeline
    from healthpredict.modeling.train import features_of
    from healthpredict.pipelines.train_and_register import evaluate_scores

    settings = get_settings()
    run_id = trained["run_id"]
    with registry_errors(settings):
        configure_tracking(settings)
        run = MlflowClient().get_run(run_id)
        if run.data.tags.get("evaluated") == "true":
            return _evaluated(trained, run.data.metrics, reused=True)
        _require_data(settings, trained["data_hash"])
        test = load_test_window(settings.prepared_dir, load_manifest(settings.prepared_dir))
        scores = load_pipeline(trained["model_uri"]).predict_proba(features_of(test))[:, 1]
        report = evaluate_scores(scores, test, settings)
        with mlflow.start_run(run_id=run_id):
            mlflow.log_metrics({**report.flat_metrics(), "n_test": len(test)})
            _log_evaluation(test, scores, report)
            mlflow.set_tag("evaluated", "true")  # last: marks the evaluation complete
    return _evaluated(trained, report.flat_metrics(), reused=False)


def register(evaluated: dict[str, Any]) -> dict[str, Any]:
    """Task: register the evaluated model; it becomes challenger (or the first champion)."""
    from healthpredict.orchestration.registration import register_once

    settings = get_settings()
    with registry_errors(settings):
        return register_once(settings, evaluated["run_id"], evaluated["model_uri"])


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


def search_key(settings: Settings, data_hash: str) -> str:
    """What determines a search's result: data, space, budget, folds, concurrency, seed."""
    path = settings.search_space_file
    # A missing file is reported by load_search_space, with a better message than here.
    space = path.read_text() if path is not None and path.is_file() else str(path or "packaged")
    return _key(
        "search",
        data_hash,
        space,
        settings.tune_trials,
        settings.tune_time_budget_seconds,
        settings.tune_folds,
        settings.tune_concurrency,
        settings.seed,
    )


def _key(*parts: Any) -> str:
    payload = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _plain(value: Any) -> Any:
    """JSON-safe copy (Ray and Optuna hand back numpy numbers)."""
    return json.loads(json.dumps(value, default=lambda item: item.item()))


def _finished_run(tag: str, value: str) -> Run | None:
    """The newest finished run of this experiment carrying ``tag = value``."""
    import mlflow

    experiment = mlflow.get_experiment_by_name(get_settings().experiment_name)
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


def _require_data(settings: Settings, data_hash: str) -> None:
    """The prepared data must still be what the run prepared (another run may have re-cut it)."""
    from healthpredict.data.timeline import TimelineError, load_manifest

    current = load_manifest(settings.prepared_dir).data_hash
    if current != data_hash:
        raise TimelineError(
            f"the prepared data changed during this run (data hash {data_hash}, now {current}): "
            "run the DAG again"
        )


def _window(settings: Settings, data_hash: str, name: str) -> pd.DataFrame:
    from healthpredict.data.timeline import load_manifest, load_window

    _require_data(settings, data_hash)
    return load_window(settings.prepared_dir, load_manifest(settings.prepared_dir), name)


@contextmanager
def _ray_session(settings: Settings) -> Iterator[None]:
    """Connect Ray for the search; shut a Ray this task started down when it ends."""
    import ray

    from healthpredict.modeling.tune import connect_ray

    started = not ray.is_initialized()
    connect_ray(settings.ray_address)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def _log_evaluation(test: pd.DataFrame, scores: Any, report: EvalReport) -> None:
    import tempfile
    from pathlib import Path

    import mlflow

    from healthpredict.data.prepare import TARGET
    from healthpredict.reporting import plots

    labels, curves = test[TARGET].to_numpy(), {"LightGBM pipeline": scores}
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        plots.plot_roc(labels, curves, out / "roc.png")
        plots.plot_precision_recall(labels, curves, out / "precision_recall.png")
        plots.plot_calibration(labels, curves, out / "calibration.png")
        (out / EVALUATION_FILE).write_text(json.dumps(report.to_dict(), indent=2))
        mlflow.log_artifacts(folder, "evaluation")


def _trained(run_id: str, model_uri: str, data_hash: str, reused: bool) -> dict[str, Any]:
    return {"run_id": run_id, "model_uri": model_uri, "data_hash": data_hash, "reused": reused}


def _evaluated(
    trained: dict[str, Any], metrics: dict[str, float], *, reused: bool
) -> dict[str, Any]:
    wanted = ("test_roc_auc", "test_pr_auc", "test_brier", "n_test")
    return {
        **{k: v for k, v in trained.items() if k != "reused"},
        "metrics": {k: float(metrics[k]) for k in wanted if k in metrics},
        "reused": reused,
    }
