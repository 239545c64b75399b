"""From validated records to predictions: risk, band, decision, reasons, and the log entry.

Routes call :func:`predict_records` and nothing else; this is where serving decisions live.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from healthpredict.data.pseudonym import keyed_hash
from healthpredict.data.schema import ID_COLUMNS
from healthpredict.errors import HealthPredictError
from healthpredict.monitoring.store import LoggedRequest, store_errors
from healthpredict.serving.model_store import Explanation, LoadedModel, Scores
from healthpredict.serving.schemas import DISCHARGE_TIME
from healthpredict.settings import ServingSettings, Settings

if TYPE_CHECKING:
    from healthpredict.monitoring.outcomes import OutcomeRecord, OutcomeReport
    from healthpredict.serving.views import ServiceState


class ModelUnavailableError(HealthPredictError):
    """No model is loaded yet (registry unreachable, no champion, or still loading)."""


@dataclass(frozen=True)
class Scored:
    """Predictions for a list of records, in request order."""

    model: LoadedModel
    probabilities: np.ndarray
    bands: list[str]
    decisions: list[bool]
    reasons: list[list[dict[str, Any]]]
    explanation: str
    log: LoggedRequest


_NOT_FEATURES = (*ID_COLUMNS, DISCHARGE_TIME)


def split_ids(
    encounters: Sequence[dict[str, Any]],
) -> tuple[list[dict[str, Any]], dict[str, list[Any]]]:
    """Separate the optional identifiers and discharge time from the model's feature fields."""
    ids: dict[str, list[Any]] = {name: [] for name in _NOT_FEATURES}
    features = []
    for encounter in encounters:
        record = dict(encounter)  # a copy, then three pops: cheaper than filtering 48 keys
        for name, values in ids.items():
            values.append(record.pop(name, None))
        features.append(record)
    return features, ids


def hashed(values: list[Any], salt: bytes) -> list[str | None]:
    """Salted hashes of the given ids; None where no id was sent."""
    if all(v is None for v in values):
        return [None] * len(values)
    given = pd.Series([v for v in values if v is not None])
    keys = iter(keyed_hash(given, salt).tolist())
    return [None if v is None else next(keys) for v in values]


def risk_bands(probabilities: np.ndarray, serving: ServingSettings) -> list[str]:
    """Band of each probability: edges are inclusive lower bounds of the next band."""
    edges, names = serving.risk_band_edges, serving.risk_band_names
    if len(probabilities) < 16:  # numpy's set-up costs more than a few bisections
        return [names[bisect_right(edges, p)] for p in probabilities.tolist()]
    index = np.searchsorted(np.asarray(edges), probabilities, side="right")
    return [names[i] for i in index]


def top_reasons(
    model: LoadedModel, records: Sequence[dict[str, Any]], scores: Scores, k: int
) -> list[list[dict[str, Any]]]:
    """The ``k`` request fields that moved each prediction most, by absolute contribution."""
    compiled, attributions, matrix = model.compiled, scores.attributions, scores.matrix
    if k == 0 or compiled is None or attributions is None or matrix is None:
        return [[] for _ in records]
    names = compiled.encoder.feature_names
    reasons: list[list[dict[str, Any]]] = []
    for row, record in enumerate(records):
        order = np.argsort(-np.abs(attributions[row]), kind="stable")[:k]
        reasons.append([])
        for i in order:
            if attributions[row, i] == 0.0:
                continue
            group = compiled.groups[i]
            # A derived feature has no request field of its name: report the value it took.
            value = record[group] if group in record else float(matrix[row, names.index(group)])
            reasons[-1].append(
                {"feature": group, "contribution": float(attributions[row, i]), "value": value}
            )
    return reasons


def predict_records(
    model: LoadedModel | None,
    encounters: Sequence[dict[str, Any]],
    settings: Settings,
    salt: bytes,
    request_id: str,
    explain: Explanation = "path",
) -> Scored:
    """Score validated encounters with ``model`` (one snapshot for the whole request).

    Raises:
        ModelUnavailableError: ``model`` is None.
    """
    if model is None:
        raise ModelUnavailableError("no model loaded")
    records, ids = split_ids(encounters)
    scores = model.score(records, explain)
    probabilities = scores.probabilities
    bands = risk_bands(probabilities, settings.serving)
    decisions = (probabilities >= settings.serving.decision_threshold).tolist()
    reasons = top_reasons(model, records, scores, settings.serving.top_contributions)
    now = datetime.now(UTC)
    log = LoggedRequest(
        request_id,
        now,
        settings.monitoring.deployment,
        model.name,
        model.version,
        records,
        probabilities.tolist(),
        bands,
        decisions,
        hashed(ids["patient_nbr"], salt),
        hashed(ids["encounter_id"], salt),
        [moment or now for moment in ids[DISCHARGE_TIME]],
    )
    explained = explain if scores.attributions is not None else "none"
    return Scored(model, probabilities, bands, decisions, reasons, explained, log)


def record_outcomes(state: ServiceState, records: Sequence[OutcomeRecord]) -> OutcomeReport:
    """Store outcomes sent to the API for this service's deployment (all or none).

    Raises:
        OutcomeError: One contradicts a recorded outcome.
        StoreUnavailableError: The monitoring store cannot be reached.
    """
    from healthpredict.monitoring import outcomes

    with store_errors(state.settings.monitoring_url):
        return outcomes.record(
            state.engine, state.settings.monitoring.deployment, records, state.salt, "api"
        )
