"""Flows: the promotion gate between challenger and champion, and rollback.

Every decision is recorded twice: as tags on the model versions involved, and as a small MLflow
run (``promotion-gate`` / ``rollback``) holding the full decision, so the history of who was
champion when, and why, can be read back from the tracking server. The writes themselves are
:mod:`healthpredict.modeling.champion`'s.
"""

from __future__ import annotations

import logging

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from healthpredict.data.prepare import TARGET
from healthpredict.data.pseudonym import PATIENT_KEY, SEQUENCE
from healthpredict.data.timeline import load_manifest, load_window
from healthpredict.modeling import champion
from healthpredict.modeling.champion import (
    CHALLENGER,
    CHAMPION,
    PromotionError,
    RollbackRecord,
    aliased,
)
from healthpredict.modeling.gate import GateDecision, GatePolicy, decide
from healthpredict.modeling.registry import configure_tracking, load_pipeline
from healthpredict.modeling.train import features_of
from healthpredict.settings import Settings

# PromotionError, RollbackRecord and aliased live in modeling.champion; the CLI imports the
# error from here.

logger = logging.getLogger(__name__)


def promote(settings: Settings) -> GateDecision:
    """Compare the challenger with the champion on the gate window; promote if it wins.

    Raises:
        PromotionError: No champion or no challenger, or the gate window overlaps the data
            either model was trained on.
    """
    configure_tracking(settings)
    client, name = MlflowClient(), settings.tracking.model_name
    incumbent = aliased(client, name, CHAMPION, "no champion yet: nothing to compare")
    challenger = aliased(
        client,
        name,
        CHALLENGER,
        "no challenger: run `healthpredict train` or `healthpredict tune` first",
    )
    decision = gate_on_window(settings, incumbent, challenger)
    champion.record_gate_decision(client, name, decision, deferred=False)
    if decision.promote:
        champion.promote(client, name, str(challenger.version))
    logger.info("gate: %s (%s)", "promoted" if decision.promote else "refused", decision.reason)
    return decision


def gate_on_window(
    settings: Settings, incumbent: ModelVersion, challenger: ModelVersion
) -> GateDecision:
    """Score both versions on the configured gate window and decide (nothing is recorded).

    Raises:
        PromotionError: The gate window overlaps the data either model was trained on.
    """
    window = load_window(
        settings.data.prepared_dir, load_manifest(settings.data.prepared_dir), settings.gate.window
    )
    for version in (incumbent, challenger):
        _require_unseen(version, int(window[SEQUENCE].min()), settings.gate.window)
    records = features_of(window)
    scores = [load_pipeline(_uri(v)).predict_proba(records)[:, 1] for v in (incumbent, challenger)]
    return decide(
        window[TARGET].to_numpy(),
        (scores[0], scores[1]),
        window[PATIENT_KEY],
        GatePolicy.from_settings(settings.gate, settings.training, settings.monitoring),
        (str(incumbent.version), str(challenger.version)),
        settings.gate.window,
        attributes=window,
    )


def rollback(settings: Settings, reason: str) -> RollbackRecord:
    """Put the previous champion back and record why.

    Raises:
        PromotionError: There is no champion, or it has no predecessor.
    """
    configure_tracking(settings)
    return champion.rollback(MlflowClient(), settings.tracking.model_name, reason)


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
