"""The whole foundation flow on a synthetic extract: prepare, train, evaluate, track, register.

Uses a real MLflow store (SQLite + local artifacts) in a temporary folder.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from healthpredict.data.prepare import TARGET
from healthpredict.data.timeline import load_manifest, load_test_window
from healthpredict.modeling.registry import CHALLENGER, CHAMPION, load_pipeline
from healthpredict.modeling.train import features_of
from healthpredict.pipelines.prepare_data import prepare_data
from healthpredict.pipelines.train_and_register import train_and_register
from healthpredict.settings import Settings
from tests.conftest import make_settings
from tests.synthetic import make_raw_frame, write_csv

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, object]:
    folder = tmp_path_factory.mktemp("flow")
    source = folder / "diabetic_data.csv"
    write_csv(make_raw_frame(2500, seed=11), str(source))
    settings = make_settings(folder, source)
    prepare_data(settings)
    return settings, train_and_register(settings)


def test_first_model_becomes_champion_with_tags(trained: tuple[Settings, object]) -> None:
    settings, summary = trained
    mlflow.set_tracking_uri(settings.tracking_uri)
    client = MlflowClient()
    version = client.get_model_version_by_alias(settings.tracking.model_name, CHAMPION)
    assert str(version.version) == summary.registered.version  # type: ignore[attr-defined]
    manifest = load_manifest(settings.data.prepared_dir)
    assert version.tags["data_hash"] == manifest.data_hash
    assert version.tags["training_window"].startswith("sequence 0-")
    assert "first model" in version.tags["promotion_reason"]
    assert "test_roc_auc" in version.tags


def test_run_holds_params_metrics_plots_and_manifest(trained: tuple[Settings, object]) -> None:
    settings, summary = trained
    mlflow.set_tracking_uri(settings.tracking_uri)
    client = MlflowClient()
    run = client.get_run(summary.registered.run_id)  # type: ignore[attr-defined]
    experiment = client.get_experiment_by_name(settings.tracking.experiment_name)
    assert run.info.experiment_id == experiment.experiment_id
    assert run.info.artifact_uri.startswith(str(settings.artifact_location))
    assert {"test_roc_auc", "test_pr_auc", "test_brier", "test_ece", "test_roc_auc_ci_low"} <= set(
        run.data.metrics
    )
    assert run.data.params["lightgbm.learning_rate"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {
        "evaluation/roc.png",
        "evaluation/calibration.png",
        "evaluation/precision_recall.png",
        "evaluation/feature_importance.png",
        "evaluation/evaluation.json",
    } <= artifacts
    assert client.list_artifacts(run.info.run_id, "data")[0].path == "data/manifest.json"
    children = client.search_runs(
        [run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    assert [c.info.run_name for c in children] == ["logistic-baseline"]


def test_registry_round_trip_gives_the_same_probabilities(trained: tuple[Settings, object]) -> None:
    settings, summary = trained
    mlflow.set_tracking_uri(settings.tracking_uri)
    test = load_test_window(settings.data.prepared_dir, load_manifest(settings.data.prepared_dir))
    records = features_of(test)
    champion_uri = f"models:/{settings.tracking.model_name}@{CHAMPION}"
    from_registry = load_pipeline(champion_uri).predict_proba(records)[:, 1]
    via_pyfunc = np.asarray(mlflow.pyfunc.load_model(champion_uri).predict(records))[:, 1]
    run_uri = f"runs:/{summary.registered.run_id}/model"  # type: ignore[attr-defined]
    in_memory = load_pipeline(run_uri).predict_proba(records)[:, 1]
    np.testing.assert_allclose(from_registry, in_memory)
    np.testing.assert_allclose(via_pyfunc, in_memory)
    assert from_registry.min() >= 0 and from_registry.max() <= 1
    assert len(np.unique(test[TARGET])) == 2


def test_second_model_is_a_challenger_not_a_new_champion(trained: tuple[Settings, object]) -> None:
    settings, first = trained
    second = train_and_register(settings)
    assert second.registered.alias == CHALLENGER
    mlflow.set_tracking_uri(settings.tracking_uri)
    client = MlflowClient()
    champion = client.get_model_version_by_alias(settings.tracking.model_name, CHAMPION)
    assert str(champion.version) == first.registered.version  # type: ignore[attr-defined]
    assert (
        "gate"
        in client.get_model_version(settings.tracking.model_name, second.registered.version).tags[
            "promotion_reason"
        ]
    )


def test_weak_first_model_gets_no_alias(tmp_path: Path) -> None:
    source = tmp_path / "diabetic_data.csv"
    write_csv(make_raw_frame(1200, seed=4), str(source))
    settings = make_settings(tmp_path, source, min_champion_roc_auc=0.99)
    prepare_data(settings)
    summary = train_and_register(settings)
    assert summary.registered.alias is None
    assert "below the bar" in summary.registered.reason
