"""Search with a real local Ray, then the gate and rollback against a real MLflow registry."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from healthpredict.modeling.registry import CHALLENGER, CHAMPION, current_version
from healthpredict.modeling.search import SearchBudget, run_search
from healthpredict.modeling.train import default_params
from healthpredict.modeling.tune import (
    SearchError,
    connect_ray,
    load_search_space,
)
from healthpredict.pipelines.prepare_data import prepare_data
from healthpredict.pipelines.promote import PromotionError, promote, rollback
from healthpredict.pipelines.train_and_register import train_and_register
from healthpredict.pipelines.tune_and_register import tune_and_register
from healthpredict.settings import Settings
from tests.conftest import make_settings
from tests.synthetic import make_raw_frame, write_csv

pytestmark = pytest.mark.integration
WEAK = {**default_params(), "lightgbm": {"n_estimators": 2, "num_leaves": 2, "learning_rate": 0.05}}


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    import ray

    connect_ray(None)
    yield
    ray.shutdown()


def _prepared(folder: Path, **overrides: object) -> Settings:
    source = folder / "diabetic_data.csv"
    write_csv(make_raw_frame(6000, seed=21), str(source))
    # The offline timeline (70 % + 3 batches): the gate window must be large enough to decide.
    offline = {"initial_window_fraction": 0.7, "n_batches": 3}
    settings = make_settings(
        folder, source, **{"tune_trials": 8, "tune_folds": 3, **offline, **overrides}
    )
    prepare_data(settings)
    return settings


@pytest.fixture(scope="module")
def tuned(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, object]:
    settings = _prepared(tmp_path_factory.mktemp("tune"))
    return settings, tune_and_register(settings)


def test_search_prunes_logs_trials_and_registers_the_candidate(
    tuned: tuple[Settings, object],
) -> None:
    settings, summary = tuned
    search = summary.search  # type: ignore[attr-defined]
    assert len(search.trials) == 8
    assert search.n_stopped_early >= 1, "ASHA should stop some trials after their first fold"
    assert search.best.complete and len(search.best.fold_scores) == 3
    mlflow.set_tracking_uri(settings.tracking_uri)
    client = MlflowClient()
    parent = client.get_run(summary.search_run_id)  # type: ignore[attr-defined]
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    names = sorted(run.info.run_name for run in children)
    assert names == [*(f"trial-{i:03d}" for i in range(1, 9)), "tuned-lightgbm"]
    assert parent.data.metrics["trials_stopped_early"] == search.n_stopped_early
    registered = summary.training.registered  # type: ignore[attr-defined]
    assert registered.alias == CHAMPION  # the first model, no champion before it
    version = client.get_model_version(settings.tracking.model_name, registered.version)
    assert version.tags["search_run_id"] == summary.search_run_id  # type: ignore[attr-defined]


def test_same_seed_same_best_configuration(tuned: tuple[Settings, object]) -> None:
    settings, summary = tuned
    from healthpredict.data.timeline import INITIAL_WINDOW, load_manifest, load_window

    train = load_window(
        settings.data.prepared_dir, load_manifest(settings.data.prepared_dir), INITIAL_WINDOW
    )
    budget = SearchBudget(
        trials=8, time_budget_seconds=170, n_folds=3, concurrency=1, seed=settings.training.seed
    )
    again = run_search(train, load_search_space(), budget, settings.data.data_dir / "again")
    assert again.best.config == summary.search.best.config  # type: ignore[attr-defined]
    assert again.best.mean_score == pytest.approx(summary.search.best.mean_score)  # type: ignore[attr-defined]


def test_failed_trials_register_nothing(ray_session: None, tmp_path: Path) -> None:
    broken = tmp_path / "space.yaml"
    # num_leaves=1 makes LightGBM raise inside every trial.
    broken.write_text(
        "lightgbm:\n  num_leaves: {choice: [[1]]}\n"
        "preprocessing:\n  min_category_count: {choice: [[20]]}\n"
    )
    settings = _prepared(tmp_path, search_space_file=broken, tune_trials=2)
    with pytest.raises(SearchError, match="trial"):
        tune_and_register(settings)
    mlflow.set_tracking_uri(settings.tracking_uri)
    assert current_version(MlflowClient(), settings.tracking.model_name, CHAMPION) is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("lightgbm: {}\npreprocessing: {}\n", "empty"),
        ("foo: 1\n", "section"),
        ("lightgbm:\n  lr: {gaussian: [0, 1]}\npreprocessing: {}\n", "expected one of"),
    ],
)
def test_bad_search_space(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(content)
    with pytest.raises(SearchError, match=message):
        load_search_space(path)


def test_unreachable_ray_address_fails_fast() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(SearchError, match="cannot reach the Ray cluster"):
        connect_ray(f"ray://127.0.0.1:{port}")


def test_zero_budget_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SearchError, match="budget"):
        run_search(None, load_search_space(), SearchBudget(0, 10, 3, 1, 0), tmp_path)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A weak first champion, so that a default model is clearly better."""
    settings = _prepared(tmp_path_factory.mktemp("gate"))
    assert train_and_register(settings, WEAK).registered.alias == CHAMPION
    return settings


def _aliases(settings: Settings) -> tuple[str | None, str | None]:
    mlflow.set_tracking_uri(settings.tracking_uri)
    client = MlflowClient()
    name = settings.tracking.model_name
    return current_version(client, name, CHAMPION), current_version(client, name, CHALLENGER)


def test_no_challenger_is_a_clear_error(registry: Settings) -> None:
    with pytest.raises(PromotionError, match="no challenger"):
        promote(registry)


def test_gate_promotes_a_clearly_better_model_then_rollback_restores(registry: Settings) -> None:
    better = train_and_register(registry).registered
    decision = promote(registry)
    assert decision.promote, decision.reason
    assert decision.auc_gain.low > 0 and decision.challenger_roc_auc > decision.champion_roc_auc
    assert _aliases(registry) == (better.version, None)
    client = MlflowClient()
    tags = client.get_model_version(registry.tracking.model_name, better.version).tags
    assert tags["gate_verdict"] == "promoted" and tags["previous_champion"] == "1"
    assert "promoted to champion" in tags["promotion_reason"]

    record = rollback(registry, "suspected data issue")
    assert (record.from_version, record.to_version) == (better.version, "1")
    assert _aliases(registry)[0] == "1"
    assert (
        client.get_model_version(registry.tracking.model_name, better.version).tags["rolled_back"]
        == "suspected data issue"
    )
    # Undo the rollback for the tests below: the better model is champion again.
    client.set_registered_model_alias(registry.tracking.model_name, CHAMPION, better.version)


def test_gate_refuses_a_clearly_worse_model(registry: Settings) -> None:
    champion_before = _aliases(registry)[0]
    worse = train_and_register(registry, WEAK).registered
    decision = promote(registry)
    assert not decision.promote and decision.auc_gain.high < 0
    assert _aliases(registry) == (champion_before, worse.version)
    tags = MlflowClient().get_model_version(registry.tracking.model_name, worse.version).tags
    assert tags["gate_verdict"] == "refused" and tags["promotion_reason"].startswith("not promoted")


def test_gate_refuses_an_indistinguishable_model(registry: Settings) -> None:
    champion_before = _aliases(registry)[0]
    train_and_register(registry)  # same data, same seed: the same model as the champion
    decision = promote(registry)
    assert not decision.promote
    assert decision.auc_gain.estimate == pytest.approx(0.0, abs=1e-9)
    assert _aliases(registry)[0] == champion_before


def test_gate_never_judges_on_training_data(registry: Settings) -> None:
    settings = registry.with_flat(gate_window="initial")
    with pytest.raises(PromotionError, match="overlaps the training window"):
        promote(settings)


def test_no_champion_is_a_clear_error_and_changes_nothing(tmp_path: Path) -> None:
    settings = _prepared(tmp_path)
    with pytest.raises(PromotionError, match="no champion"):
        promote(settings)
    with pytest.raises(PromotionError, match="nothing to roll back"):
        rollback(settings, "test")
