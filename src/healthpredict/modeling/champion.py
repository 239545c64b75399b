"""Who is champion: the only code that moves registry aliases and writes gate tags.

Registration, the promotion gate, a delivery, the simulation loop and a rollback all change
roles through these functions, so the order of the writes is decided once: the tags that
describe a change come first and the alias (or the gate's completion tag) last, so a failure
half-way never leaves a role or a verdict that its tags do not explain.

Imports nothing heavy at import time: the DAG files load the task modules that use it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from healthpredict.errors import HealthPredictError

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from healthpredict.modeling.gate import GateDecision

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_CHAMPION = "previous_champion"
PROMOTION_REASON = "promotion_reason"
GATE_VERDICT_TAG = "gate_verdict"
PROMOTED = "promoted"
# The champion a gate decision was measured against; a decision against another is stale.
GATE_CHAMPION_TAG = "gate_champion_version"
logger = logging.getLogger(__name__)


class PromotionError(HealthPredictError):
    """The gate or a rollback cannot run; the registry is left as it was."""


class PromotionRefusedError(HealthPredictError):
    """The version may not become champion (the gate did not pass it against this champion)."""


@dataclass(frozen=True)
class ChampionMove:
    """Where the champion alias is after a promotion, and where it was."""

    champion: str
    previous: str | None
    moved: bool


@dataclass(frozen=True)
class RollbackRecord:
    """Which version was champion, which is now, and why."""

    from_version: str
    to_version: str
    reason: str


def current_version(client: MlflowClient, name: str, alias: str) -> str | None:
    """Version number holding ``alias``, or None when the alias (or the model) does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException as error:
        # Only "no such model/alias" means None; an unreachable registry must not look empty.
        if "not found" in str(error):
            return None
        raise


def aliased(client: MlflowClient, name: str, alias: str, missing: str) -> ModelVersion:
    """The version holding ``alias``.

    Raises:
        PromotionError: The model or the alias does not exist (``missing`` says what to do).
    """
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as error:
        # A missing model or alias is an answer; anything else (unreachable server) is not.
        if "not found" in str(error):
            raise PromotionError(missing) from error
        raise


def assign_initial_alias(
    client: MlflowClient, name: str, version: str, alias: str | None, reason: str
) -> None:
    """Record why a newly registered version got ``alias`` (or none), then give it.

    Args:
        client: Registry client.
        name: Registered model name.
        version: The version just registered (its other tags already written).
        alias: ``champion``, ``challenger`` or None.
        reason: Why, kept as ``promotion_reason``.
    """
    # promotion_reason before the alias: a retried registration takes a version without it as
    # interrupted, and a version never holds an alias its tags do not explain.
    client.set_model_version_tag(name, version, PROMOTION_REASON, reason)
    if alias is not None:
        client.set_registered_model_alias(name, alias, version)


def make_challenger(client: MlflowClient, name: str, version: str, tags: Mapping[str, str]) -> None:
    """Tag ``version`` with ``tags``, then give it the ``challenger`` alias."""
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    client.set_registered_model_alias(name, CHALLENGER, version)


def record_gate_decision(
    client: MlflowClient, name: str, decision: GateDecision, *, deferred: bool
) -> None:
    """Keep a gate decision on both versions and in a ``promotion-gate`` audit run.

    Args:
        client: Registry client (the audit run goes to the active tracking URI).
        name: Registered model name.
        decision: The gate's decision.
        deferred: The alias is left to a delivery, which promotes once the rollout is verified
            (the promotion_reason says so); otherwise the caller promotes right away.
    """
    for version in (decision.champion_version, decision.challenger_version):
        for key, value in decision.as_tags().items():
            client.set_model_version_tag(name, version, key, value)
    if not decision.promote:
        outcome = "not promoted"
    elif deferred:
        outcome = "passed the gate; champion once delivered"
    else:
        outcome = "promoted to champion"
    reason = f"{outcome}: {decision.reason}"
    client.set_model_version_tag(name, decision.challenger_version, PROMOTION_REASON, reason)
    _audit_run("promotion-gate", decision.to_dict())
    # Written last: a delivery (and a repeated gate) trusts a verdict only once this is there.
    client.set_model_version_tag(
        name, decision.challenger_version, GATE_CHAMPION_TAG, decision.champion_version
    )


def promote(
    client: MlflowClient, name: str, version: str, tags: Mapping[str, str] | None = None
) -> ChampionMove:
    """Make ``version`` champion, remembering the one before it for a rollback.

    A ``challenger`` alias on ``version`` is removed. Promoting the champion changes nothing.

    Args:
        client: Registry client.
        name: Registered model name.
        version: The version to promote.
        tags: More tags describing the move, written before the alias.
    """
    return _move(client, name, version, current_version(client, name, CHAMPION), tags or {})


def promote_gated(
    client: MlflowClient,
    name: str,
    version: str,
    *,
    occasion: str,
    tags: Mapping[str, str] | None = None,
) -> ChampionMove:
    """Promote ``version`` only if the gate passed it against the champion now in place.

    Args:
        client: Registry client.
        name: Registered model name.
        version: The version to promote.
        occasion: What the promotion follows, for its promotion_reason
            (e.g. ``after a verified rollout of v1.2.3``).
        tags: More tags describing the move, written before the alias.

    Raises:
        PromotionRefusedError: The gate refused it, never saw it, or measured it against a
            champion that has since changed.
    """
    champion = current_version(client, name, CHAMPION)
    if champion == version:  # a retried task
        return ChampionMove(version, None, moved=False)
    recorded = client.get_model_version(name, version).tags
    if recorded.get(GATE_VERDICT_TAG) != PROMOTED or GATE_CHAMPION_TAG not in recorded:
        raise PromotionRefusedError(f"v{version} has not passed the promotion gate")
    if recorded[GATE_CHAMPION_TAG] != (champion or ""):
        raise PromotionRefusedError(
            f"v{version} passed the gate against v{recorded[GATE_CHAMPION_TAG]}, but the "
            f"champion is now v{champion}: gate it again"
        )
    reason = f"promoted to champion {occasion}: {recorded.get('gate_reason', '')}"
    return _move(client, name, version, champion, {**(tags or {}), PROMOTION_REASON: reason})


def _move(
    client: MlflowClient, name: str, version: str, champion: str | None, tags: Mapping[str, str]
) -> ChampionMove:
    if champion == version:
        return ChampionMove(version, None, moved=False)
    if champion is not None:
        client.set_model_version_tag(name, version, PREVIOUS_CHAMPION, champion)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    if current_version(client, name, CHALLENGER) == version:
        client.delete_registered_model_alias(name, CHALLENGER)
    # The one write that changes what is served; everything before it only describes it, so a
    # failure before it leaves the champion where it was.
    client.set_registered_model_alias(name, CHAMPION, version)
    return ChampionMove(version, champion, moved=True)


def reinstate(client: MlflowClient, name: str, version: str) -> None:
    """Give the champion alias back to ``version`` without recording a move.

    For undoing a promotion that its step never committed: ``version`` was champion before,
    and its tags already say why.
    """
    client.set_registered_model_alias(name, CHAMPION, version)


def rollback(client: MlflowClient, name: str, reason: str) -> RollbackRecord:
    """Put the previous champion back, record why on both versions and in a ``rollback`` run.

    Raises:
        PromotionError: There is no champion, or it has no predecessor.
    """
    current = aliased(client, name, CHAMPION, "no champion: nothing to roll back")
    previous = current.tags.get(PREVIOUS_CHAMPION)
    if not previous:
        raise PromotionError(f"champion v{current.version} has no previous champion to restore")
    record = RollbackRecord(str(current.version), previous, reason)
    client.set_model_version_tag(name, record.from_version, "rolled_back", reason)
    client.set_model_version_tag(
        name,
        previous,
        PROMOTION_REASON,
        f"restored by rollback from v{record.from_version}: {reason}",
    )
    client.set_registered_model_alias(name, CHAMPION, previous)
    _audit_run(
        "rollback", {"from_version": record.from_version, "to_version": previous, "reason": reason}
    )
    logger.info("rollback: champion v%s -> v%s (%s)", record.from_version, previous, reason)
    return record


def _audit_run(run_name: str, payload: dict[str, object]) -> None:
    """The whole decision as a small MLflow run, so the history can be read back."""
    import mlflow

    record = _jsonable(payload)
    assert isinstance(record, dict)
    with mlflow.start_run(run_name=run_name):
        mlflow.set_tag("kind", run_name)
        mlflow.log_dict(record, f"{run_name}.json")


def _jsonable(value: object) -> object:
    import numpy as np

    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if hasattr(value, "__dataclass_fields__"):
        return _jsonable(vars(value))
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value
