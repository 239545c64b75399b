"""Flows: the promotion gate between challenger and champion, and rollback.

Every decision is recorded twice: as tags on the model versions involved, and as a small MLflow
run (``promotion-gate`` / ``rollback``) holding the full decision, so the history of who was
champion when, and why, can be read back from the tracking server.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from healthpredict.data.prepare import TARGET
from healthpredict.data.pseudonym import PATIENT_KEY, SEQUENCE
from healthpredict.data.timeline import load_manifest, load_window
from healthpredict.modeling.gate import GateDecision, GatePolicy, decide
from healthpredict.modeling.registry import CHALLENGER, CHAMPION, configure_tracking, load_pipeline
from healthpredict.modeling.train import features_of
from healthpredict.settings import Settings

logger = logging.getLogger(__name__)
PREVIOUS_CHAMPION = "previous_champion"


class PromotionError(RuntimeError):
    """The gate or a rollback cannot run; the registry is left as it was."""


@dataclass(frozen=True)
class RollbackRecord:
    """Which version was champion, which is now, and why."""

    from_version: str
    to_version: str
    reason: str


def gate_policy(settings: Settings) -> GatePolicy:
    """The gate thresholds in force."""
    return GatePolicy(
        min_auc_gain=settings.gate_min_auc_gain,
        loss_tolerance=settings.gate_loss_tolerance,
        max_ece_increase=settings.gate_max_ece_increase,
        rounds=max(settings.bootstrap_rounds, 200),
        confidence_level=settings.confidence_level,
        seed=settings.seed,
    )


def promote(settings: Settings) -> GateDecision:
    """Compare the challenger with the champion on the gate window; promote if it wins.

    Raises:
        PromotionError: No champion or no challenger, or the gate window overlaps the data
            either model was trained on.
    """
    configure_tracking(settings)
    client = MlflowClient()
    champion = aliased(client, settings.model_name, CHAMPION, "no champion yet: nothing to compare")
    challenger = aliased(
        client,
        settings.model_name,
        CHALLENGER,
        "no challenger: run `healthpredict train` or `healthpredict tune` first",
    )
    decision = gate_on_window(settings, champion, challenger)
    record_decision(client, settings.model_name, decision)
    if decision.promote:
        move_champion(client, settings.model_name, str(challenger.version), str(champion.version))
    logger.info("gate: %s (%s)", "promoted" if decision.promote else "refused", decision.reason)
    return decision


def gate_on_window(
    settings: Settings, champion: ModelVersion, challenger: ModelVersion
) -> GateDecision:
    """Score both versions on the configured gate window and decide (nothing is recorded).

    Raises:
        PromotionError: The gate window overlaps the data either model was trained on.
    """
    window = load_window(
        settings.prepared_dir, load_manifest(settings.prepared_dir), settings.gate_window
    )
    for version in (champion, challenger):
        _require_unseen(version, int(window[SEQUENCE].min()), settings.gate_window)
    records = features_of(window)
    scores = [load_pipeline(_uri(v)).predict_proba(records)[:, 1] for v in (champion, challenger)]
    return decide(
        window[TARGET].to_numpy(),
        (scores[0], scores[1]),
        window[PATIENT_KEY],
        gate_policy(settings),
        (str(champion.version), str(challenger.version)),
        settings.gate_window,
    )


def rollback(settings: Settings, reason: str) -> RollbackRecord:
    """Put the previous champion back and record why.

    Raises:
        PromotionError: There is no champion, or it has no predecessor.
    """
    configure_tracking(settings)
    client = MlflowClient()
    name = settings.model_name
    current = aliased(client, name, CHAMPION, "no champion: nothing to roll back")
    previous = current.tags.get(PREVIOUS_CHAMPION)
    if not previous:
        raise PromotionError(f"champion v{current.version} has no previous champion to restore")
    record = RollbackRecord(str(current.version), previous, reason)
    client.set_model_version_tag(name, str(current.version), "rolled_back", reason)
    client.set_model_version_tag(
        name,
        previous,
        "promotion_reason",
        f"restored by rollback from v{current.version}: {reason}",
    )
    client.set_registered_model_alias(name, CHAMPION, previous)
    _audit_run(
        "rollback", {"from_version": record.from_version, "to_version": previous, "reason": reason}
    )
    logger.info("rollback: champion v%s -> v%s (%s)", current.version, previous, reason)
    return record


def aliased(client: MlflowClient, name: str, alias: str, missing: str) -> ModelVersion:
    """The version holding ``alias``.

    Raises:
        PromotionError: The model or the alias does not exist (``missing`` says what to do).
    """
    try:
        return client.get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException as error:
        # A missing model or alias is an answer; anything else (unreachable server) is not.
        if "not found" in str(error):
            raise PromotionError(missing) from error
        raise


def _uri(version: ModelVersion) -> str:
    return f"models:/{version.name}/{version.version}"


def _require_unseen(version: ModelVersion, window_start: int, window_name: str) -> None:
    """The gate window must start after the last encounter the model was trained on."""
    tag = version.tags.get("training_window", "")
    try:
        last_trained = int(tag.rsplit("-", 1)[1])
    except (IndexError, ValueError) as error:
        raise PromotionError(f"v{version.version} has no usable training_window tag") from error
    if window_start <= last_trained:
        raise PromotionError(
            f"gate window {window_name} overlaps the training window of v{version.version} "
            f"({tag}): a model cannot be judged on data it was trained on"
        )


def record_decision(client: MlflowClient, name: str, decision: GateDecision) -> None:
    """Tag both versions with the decision and keep the whole of it in an audit run."""
    for version in (decision.champion_version, decision.challenger_version):
        for key, value in decision.as_tags().items():
            client.set_model_version_tag(name, version, key, value)
    outcome = "promoted to champion" if decision.promote else "not promoted"
    client.set_model_version_tag(
        name, decision.challenger_version, "promotion_reason", f"{outcome}: {decision.reason}"
    )
    _audit_run("promotion-gate", decision.to_dict())


def move_champion(client: MlflowClient, name: str, new: str, old: str) -> None:
    """Make ``new`` the champion, remembering ``old`` for a rollback."""
    # The alias move is the one step that changes what is served; the tags around it only
    # describe it, so a crash after the move still leaves a consistent champion.
    client.set_model_version_tag(name, new, PREVIOUS_CHAMPION, old)
    client.set_registered_model_alias(name, CHAMPION, new)
    client.delete_registered_model_alias(name, CHALLENGER)


def _audit_run(run_name: str, payload: dict[str, object]) -> None:
    record = _jsonable(payload)
    assert isinstance(record, dict)
    with mlflow.start_run(run_name=run_name):
        mlflow.set_tag("kind", run_name)
        mlflow.log_dict(record, f"{run_name}.json")


def _jsonable(value: object) -> object:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if hasattr(value, "__dataclass_fields__"):
        return _jsonable(vars(value))
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value
