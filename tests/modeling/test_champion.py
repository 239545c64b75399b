"""The champion module against a real local MLflow registry (SQLite in a temporary folder)."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from healthpredict.modeling import champion
from healthpredict.modeling.champion import (
    CHALLENGER,
    CHAMPION,
    GATE_CHAMPION_TAG,
    PREVIOUS_CHAMPION,
    PromotionError,
    PromotionRefusedError,
    current_version,
)
from healthpredict.modeling.evaluate import Interval
from healthpredict.modeling.gate import GateDecision, GatePolicy
from healthpredict.modeling.registry import configure_tracking
from healthpredict.settings import Settings

MODEL = "champion-test"


@pytest.fixture
def client(tmp_path: Path) -> MlflowClient:
    """A registry with v1 champion, v2 challenger and an unaliased v3."""
    configure_tracking(Settings.from_flat(data_dir=tmp_path / "data"))
    client = MlflowClient()
    client.create_registered_model(MODEL)
    with mlflow.start_run() as run:
        source = f"{run.info.artifact_uri}/model"
    for _ in range(3):
        client.create_model_version(MODEL, source=source, run_id=run.info.run_id)
    champion.assign_initial_alias(client, MODEL, "1", CHAMPION, "first model")
    champion.make_challenger(client, MODEL, "2", {"training_window": "sequence 0-9"})
    return client


def _decision(champion_version: str, challenger_version: str, promote: bool) -> GateDecision:
    gain = Interval(0.03, 0.01, 0.05) if promote else Interval(-0.01, -0.03, 0.01)
    return GateDecision(
        champion_roc_auc=0.6,
        challenger_roc_auc=0.6 + gain.estimate,
        auc_gain=gain,
        champion_ece=0.02,
        challenger_ece=0.02,
        ece_increase=Interval(0.0, -0.01, 0.01),
        champion_version=champion_version,
        challenger_version=challenger_version,
        window="batch_1",
        n_rows=1000,
        n_patients=800,
        policy=GatePolicy(min_auc_gain=0.005, loss_tolerance=0.0, max_ece_increase=0.01),
        promote=promote,
        reason="a test decision",
    )


def _tags(client: MlflowClient, version: str) -> dict[str, str]:
    return dict(client.get_model_version(MODEL, version).tags)


def _audit_runs(kind: str) -> int:
    return len(mlflow.search_runs(search_all_experiments=True, filter_string=f"tags.kind='{kind}'"))


def test_registration_and_challenger_set_the_aliases(client: MlflowClient) -> None:
    assert current_version(client, MODEL, CHAMPION) == "1"
    assert current_version(client, MODEL, CHALLENGER) == "2"
    assert _tags(client, "1")["promotion_reason"] == "first model"
    assert _tags(client, "2")["training_window"] == "sequence 0-9"
    assert current_version(client, "no-such-model", CHAMPION) is None


def test_promotion_moves_the_alias_and_remembers_the_previous_champion(
    client: MlflowClient,
) -> None:
    move = champion.promote(client, MODEL, "2")
    assert (move.champion, move.previous, move.moved) == ("2", "1", True)
    assert current_version(client, MODEL, CHAMPION) == "2"
    assert current_version(client, MODEL, CHALLENGER) is None  # it pointed at v2
    assert _tags(client, "2")[PREVIOUS_CHAMPION] == "1"
    assert not champion.promote(client, MODEL, "2").moved  # already champion: nothing changes


def test_promoting_another_version_keeps_the_challenger(client: MlflowClient) -> None:
    champion.promote(client, MODEL, "3")
    assert current_version(client, MODEL, CHAMPION) == "3"
    assert current_version(client, MODEL, CHALLENGER) == "2"


def test_rollback_restores_the_previous_champion(client: MlflowClient) -> None:
    champion.promote(client, MODEL, "2")
    record = champion.rollback(client, MODEL, "suspected data issue")
    assert (record.from_version, record.to_version) == ("2", "1")
    assert current_version(client, MODEL, CHAMPION) == "1"
    assert _tags(client, "2")["rolled_back"] == "suspected data issue"
    assert _tags(client, "1")["promotion_reason"].startswith("restored by rollback from v2")
    assert _audit_runs("rollback") == 1
    with pytest.raises(PromotionError, match="no previous champion"):
        champion.rollback(client, MODEL, "again")  # v1 was the first champion


def test_rollback_without_a_champion_is_a_clear_error(client: MlflowClient) -> None:
    with pytest.raises(PromotionError, match="nothing to roll back"):
        champion.rollback(client, "no-such-model", "test")


@pytest.mark.parametrize(("promote", "deferred"), [(True, True), (True, False), (False, True)])
def test_gate_record_tags_both_versions_and_writes_the_gate_champion(
    client: MlflowClient, promote: bool, deferred: bool
) -> None:
    champion.record_gate_decision(client, MODEL, _decision("1", "2", promote), deferred=deferred)
    tags = _tags(client, "2")
    assert tags[GATE_CHAMPION_TAG] == "1"
    assert tags["gate_verdict"] == _tags(client, "1")["gate_verdict"]
    assert tags["gate_verdict"] == ("promoted" if promote else "refused")
    expected = {
        (True, True): "passed the gate; champion once delivered: ",
        (True, False): "promoted to champion: ",
        (False, True): "not promoted: ",
    }[(promote, deferred)]
    assert tags["promotion_reason"] == expected + "a test decision"
    assert _audit_runs("promotion-gate") == 1
    # Recording never moves an alias.
    assert current_version(client, MODEL, CHAMPION) == "1"
    assert current_version(client, MODEL, CHALLENGER) == "2"


def test_checked_promotion_moves_a_version_the_gate_passed(client: MlflowClient) -> None:
    champion.record_gate_decision(client, MODEL, _decision("1", "2", True), deferred=True)
    move = champion.promote_gated(
        client, MODEL, "2", occasion="after a test", tags={"delivered_image": "img:1"}
    )
    assert (move.champion, move.previous, move.moved) == ("2", "1", True)
    tags = _tags(client, "2")
    assert tags[PREVIOUS_CHAMPION] == "1" and tags["delivered_image"] == "img:1"
    assert tags["promotion_reason"] == "promoted to champion after a test: a test decision"
    assert current_version(client, MODEL, CHALLENGER) is None
    again = champion.promote_gated(client, MODEL, "2", occasion="after a retry")
    assert not again.moved  # a retried task changes nothing


def test_checked_promotion_refuses_a_version_the_gate_did_not_pass(client: MlflowClient) -> None:
    with pytest.raises(PromotionRefusedError, match="has not passed the promotion gate"):
        champion.promote_gated(client, MODEL, "2", occasion="after a test")  # never gated
    champion.record_gate_decision(client, MODEL, _decision("1", "2", False), deferred=True)
    with pytest.raises(PromotionRefusedError, match="has not passed the promotion gate"):
        champion.promote_gated(client, MODEL, "2", occasion="after a test")
    assert current_version(client, MODEL, CHAMPION) == "1"


def test_checked_promotion_refuses_a_verdict_against_another_champion(
    client: MlflowClient,
) -> None:
    champion.record_gate_decision(client, MODEL, _decision("1", "2", True), deferred=True)
    champion.promote(client, MODEL, "3")  # the champion changed since the gate ran
    with pytest.raises(PromotionRefusedError, match="passed the gate against v1, but the champion"):
        champion.promote_gated(client, MODEL, "2", occasion="after a test")
    assert current_version(client, MODEL, CHAMPION) == "3"
    assert PREVIOUS_CHAMPION not in _tags(client, "2")  # nothing written before the refusal


def test_reinstate_gives_the_alias_back_without_recording_a_move(client: MlflowClient) -> None:
    champion.promote(client, MODEL, "3")
    champion.reinstate(client, MODEL, "1")
    assert current_version(client, MODEL, CHAMPION) == "1"
    assert PREVIOUS_CHAMPION not in _tags(client, "1")
