"""The last step of a delivery: move the ``champion`` alias to the version now verified live.

Only a version the gate passed, measured against the champion still in place, is promoted;
the tags describing the move are written first and the alias last, so a failure anywhere
leaves the champion where it was. Promoting the version that is already champion changes
nothing (a retried task).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from healthpredict.delivery.commands import CommandRunner
from healthpredict.delivery.release import Release
from healthpredict.orchestration.gate import GATE_CHAMPION_TAG, GATE_VERDICT_TAG, PROMOTED
from healthpredict.orchestration.tracking import registry_errors
from healthpredict.settings import get_settings

if TYPE_CHECKING:
    from mlflow import MlflowClient


class PromotionRefusedError(RuntimeError):
    """The version may not become champion (the gate did not pass it against this champion)."""


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
        outcome = move_champion(MlflowClient(), settings.model_name, target.model_version, target)
    runner.note("champion", **outcome)
    return outcome


def move_champion(
    client: MlflowClient, name: str, version: str, release: Release
) -> dict[str, Any]:
    """Move the alias to ``version`` if the gate passed it against the current champion.

    Raises:
        PromotionRefusedError: The gate refused it, never saw it, or measured it against a
            champion that has since changed.
    """
    from healthpredict.modeling.registry import CHALLENGER, CHAMPION, current_version
    from healthpredict.pipelines.promote import PREVIOUS_CHAMPION

    champion = current_version(client, name, CHAMPION)
    if champion == version:
        return {"moved": False, "champion": version, "reason": "already champion"}
    tags = client.get_model_version(name, version).tags
    if tags.get(GATE_VERDICT_TAG) != PROMOTED or GATE_CHAMPION_TAG not in tags:
        raise PromotionRefusedError(f"v{version} has not passed the promotion gate")
    if tags[GATE_CHAMPION_TAG] != (champion or ""):
        raise PromotionRefusedError(
            f"v{version} passed the gate against v{tags[GATE_CHAMPION_TAG]}, but the champion "
            f"is now v{champion}: gate it again"
        )
    if champion is not None:
        client.set_model_version_tag(name, version, PREVIOUS_CHAMPION, champion)
    client.set_model_version_tag(name, version, "delivered_image", release.image)
    client.set_model_version_tag(
        name,
        version,
        "promotion_reason",
        f"promoted to champion after a verified rollout of {release.tag}: "
        f"{tags.get('gate_reason', '')}",
    )
    if current_version(client, name, CHALLENGER) == version:
        client.delete_registered_model_alias(name, CHALLENGER)
    # The one write that changes what "champion" means; everything before it only describes it.
    client.set_registered_model_alias(name, CHAMPION, version)
    return {"moved": True, "champion": version, "previous": champion}
