"""The promotion gate as the DAGs use it: decide and record, but never move the champion alias.

``healthpredict promote`` decides and moves the alias in one go. In the orchestrated lifecycle
the alias moves only after the delivery DAG has rolled the challenger out and smoke-tested it,
so the gate here records its decision on the versions (plus which champion it was measured
against) and the delivery reads that record before it moves anything.
"""

from __future__ import annotations

from typing import Any

from healthpredict.modeling.champion import GATE_CHAMPION_TAG, GATE_VERDICT_TAG, PROMOTED
from healthpredict.settings import Settings


def decide(settings: Settings, version: str) -> dict[str, Any]:
    """Compare challenger ``version`` with the champion on the gate window; record the verdict.

    A verdict already recorded for this version against the same champion is returned as it
    is (the bootstrap is seeded, so it would come out the same): a retried or repeated task
    does not add a second audit record.

    Raises:
        PromotionError: No champion, ``version`` is not the challenger, or the gate window
            overlaps either model's training data.
    """
    from mlflow import MlflowClient

    from healthpredict.modeling import champion
    from healthpredict.modeling.registry import configure_tracking
    from healthpredict.pipelines.promote import gate_on_window

    configure_tracking(settings)
    client = MlflowClient()
    name = settings.tracking.model_name
    incumbent = champion.aliased(
        client, name, champion.CHAMPION, "no champion: nothing to compare with"
    )
    challenger = champion.aliased(
        client, name, champion.CHALLENGER, f"v{version} is not the challenger"
    )
    if str(challenger.version) != version:
        raise champion.PromotionError(
            f"v{version} is no longer the challenger (v{challenger.version} is): not gated"
        )
    recorded = challenger.tags
    if recorded.get(GATE_CHAMPION_TAG) == str(incumbent.version) and GATE_VERDICT_TAG in recorded:
        return _summary(version, str(incumbent.version), recorded, reused=True)
    decision = gate_on_window(settings, incumbent, challenger)
    champion.record_gate_decision(client, name, decision, deferred=True)
    return _summary(version, str(incumbent.version), decision.as_tags(), reused=False)


def _summary(version: str, champion: str, tags: dict[str, str], *, reused: bool) -> dict[str, Any]:
    return {
        "version": version,
        "champion_version": champion,
        "promote": tags.get(GATE_VERDICT_TAG) == PROMOTED,
        "reason": tags.get("gate_reason", ""),
        "auc_gain": tags.get("gate_auc_gain", ""),
        "reused": reused,
    }
