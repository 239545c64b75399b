"""The last step of a delivery: move the ``champion`` alias to the version now verified live.

Only a version the gate passed, measured against the champion still in place, is promoted
(:func:`healthpredict.modeling.champion.promote_gated` checks and writes); the tags describing
the move are written first and the alias last, so a failure anywhere leaves the champion where
it was. Promoting the version that is already champion changes nothing (a retried task).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from healthpredict.delivery.commands import CommandRunner
from healthpredict.delivery.release import Release
from healthpredict.modeling import champion
from healthpredict.modeling.tracking import registry_errors
from healthpredict.settings import get_settings

if TYPE_CHECKING:
    from mlflow import MlflowClient


def promote_champion(release: dict[str, Any]) -> dict[str, Any]:
    """Task: make the delivered model version champion (image-only releases keep it)."""
    settings = get_settings()
    target = Release.from_dict(release)
    runner = CommandRunner.from_settings(settings)
    if target.model_version is None:
        runner.note("champion", moved=False, reason="image-only release")
        return {"moved": False, "reason": "image-only release: the champion stays"}
    from mlflow import MlflowClient

    from healthpredict.modeling.registry import configure_tracking

    with registry_errors(settings):
        configure_tracking(settings)
        outcome = move_champion(
            MlflowClient(), settings.tracking.model_name, target.model_version, target
        )
    runner.note("champion", **outcome)
    return outcome


def move_champion(
    client: MlflowClient, name: str, version: str, release: Release
) -> dict[str, Any]:
    """Move the alias to ``version`` if the gate passed it against the current champion.

    Raises:
        champion.PromotionRefusedError: The gate refused it, never saw it, or measured it against a
            champion that has since changed.
    """
    move = champion.promote_gated(
        client,
        name,
        version,
        occasion=f"after a verified rollout of {release.tag}",
        tags={"delivered_image": release.image},
    )
    if not move.moved:
        return {"moved": False, "champion": version, "reason": "already champion"}
    return {"moved": True, "champion": version, "previous": move.previous}
