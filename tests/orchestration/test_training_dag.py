"""The training DAG end to end with ``dag.test()``: synthetic data, a real search, a real registry.

The run starts from a weak champion, so its challenger must pass the gate; the gate records
its verdict but moves no alias (the delivery does that after a verified rollout), and a
delivery run is requested with the challenger's version. The registry is read right after the
run (:class:`Trained`): the delivery tests change it later.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.airflow_env import environment
from tests.support.dag_runs import MODEL, Trained

# Airflow's task timeouts use SIGALRM, which would silence pytest-timeout's signal method.
pytestmark = pytest.mark.timeout(600, method="thread")
CHAIN = ["prepare", "search", "train", "evaluate", "register", "gate", "delivery_request"]


def test_run_succeeds_registers_a_challenger_and_gates_it(trained: Trained) -> None:
    run = trained.run
    assert run.state == "success", run.tasks
    assert {task: run.tasks[task] for task in CHAIN} == dict.fromkeys(CHAIN, "success")
    assert run.tasks["trigger_delivery"] == "success"
    # The gate decided but moved nothing: the weak model is still champion.
    assert trained.champion == trained.weak_champion
    tags = trained.challenger_tags
    assert tags["gate_verdict"] == "promoted", tags["gate_reason"]
    assert tags["gate_champion_version"] == trained.weak_champion
    assert tags["promotion_reason"].startswith("passed the gate")
    for key in ("data_hash", "training_window", "search_run_id", "training_key", "test_roc_auc"):
        assert key in tags, key


def test_the_search_ran_and_its_trials_are_tracked(trained: Trained) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{trained.data_dir.resolve() / 'mlflow.db'}")
    search = client.get_run(trained.challenger_tags["search_run_id"])
    assert search.data.tags["kind"] == "search" and search.data.params["trial_budget"] == "1"
    children = client.search_runs(
        [search.info.experiment_id], f"tags.mlflow.parentRunId = '{search.info.run_id}'"
    )
    # The trials, and the training run of the configuration it selected (as `tune` nests it).
    assert sorted(run.info.run_name for run in children) == ["trial-001", "tuned-lightgbm"]


def test_the_training_run_has_the_shape_the_cli_gives_it(trained: Trained) -> None:
    """The DAG's tasks are the steps of `healthpredict tune`: one run shape for both."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{trained.data_dir.resolve() / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)  # not a later test's registry
    version = client.get_model_version(MODEL, trained.challenger)
    run = client.get_run(version.run_id)
    tags, params = run.data.tags, run.data.params
    assert run.info.run_name == "tuned-lightgbm" and tags["kind"] == "training"
    assert tags["mlflow.parentRunId"] == tags["search_run_id"] == version.tags["search_run_id"]
    assert tags["evaluated"] == "true" and tags["model_uri"] == version.source
    assert {"n_train", "n_test", "cv_folds", "seed", "lightgbm.num_leaves"} <= set(params)
    assert {"test_roc_auc", "test_ece", "fit_seconds"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert "evaluation/feature_importance.png" in artifacts
    assert [a.path for a in client.list_artifacts(run.info.run_id, "data")] == [
        "data/manifest.json"
    ]
    children = client.search_runs(
        [run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    assert [child.info.run_name for child in children] == ["logistic-baseline"]


def test_a_delivery_of_the_challenger_is_requested(trained: Trained) -> None:
    assert [request["conf"] for request in trained.delivery_requests] == [
        {"model_version": trained.challenger}
    ]


def test_steps_run_again_reuse_their_results_and_register_nothing(trained: Trained) -> None:
    """What a retried task or a repeated run does: every step finds its earlier result."""
    from mlflow import MlflowClient

    from healthpredict.orchestration import training as steps

    client: Any = MlflowClient(tracking_uri=f"sqlite:///{trained.data_dir.resolve() / 'mlflow.db'}")
    before = sorted(int(v.version) for v in client.search_model_versions(f"name = '{MODEL}'"))
    with environment(trained.env):
        prepared = steps.prepare()
        searched = steps.search(prepared)
        trained_run = steps.train(searched)
        evaluated = steps.evaluate(trained_run)
        registered = steps.register(evaluated)
    assert [searched["reused"], trained_run["reused"], evaluated["reused"]] == [True] * 3
    assert registered == {**registered, "reused": True, "version": trained.challenger}
    after = sorted(int(v.version) for v in client.search_model_versions(f"name = '{MODEL}'"))
    assert after == before
