"""The service's state, and the JSON bodies its endpoints answer with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic_core import ErrorDetails
from sqlalchemy import Engine

from healthpredict.monitoring.store import PredictionLogWriter
from healthpredict.serving.metrics import ServiceMetrics
from healthpredict.serving.model_store import LoadedModel, ModelStore
from healthpredict.serving.schemas import CONTRIBUTION_SCALE
from healthpredict.serving.scoring import Scored
from healthpredict.settings import Settings


@dataclass
class ServiceState:
    """Everything a request handler needs, created by the app factory."""

    settings: Settings
    store: ModelStore
    writer: PredictionLogWriter
    metrics: ServiceMetrics
    engine: Engine
    salt: bytes = b""

    def record(self, scored: Scored) -> None:
        """Hand the predictions to the log writer and the metrics (never blocks)."""
        self.writer.submit(scored.log)
        self.metrics.count_bands(scored.bands)

    def metric_state(self) -> dict[str, Any]:
        """Values exported to Prometheus at scrape time."""
        model = self.store.current
        stats = self.writer.stats
        return {
            "name": model.name if model else None,
            "version": model.version if model else None,
            "reload_failures": self.store.status.reload_failures,
            "written": stats.written,
            "dropped": stats.dropped,
            "failed": stats.failed,
        }


def not_ready_reason(state: ServiceState) -> str:
    """Why no model is served (for 503 answers)."""
    status = state.store.status
    if status.last_error:
        return f"no model loaded: {status.last_error}"
    if status.loading_version:
        return f"no model loaded yet: loading version {status.loading_version}"
    # A check that finds nothing to serve records an error: none yet means one is running.
    return "no model loaded yet: the first registry check is in progress"


def readiness(state: ServiceState) -> tuple[bool, dict[str, Any]]:
    """Whether the service can answer predictions, and the evidence."""
    model = state.store.current
    stats = state.writer.stats
    log = {
        "written": stats.written,
        "dropped": stats.dropped,
        "failed": stats.failed,
        "last_error": stats.last_error,
    }
    if model is None:
        return False, {"ready": False, "reason": not_ready_reason(state), "prediction_log": log}
    return True, {
        "ready": True,
        "model_version": model.version,
        "fast_path": model.compiled is not None,
        "prediction_log": log,
    }


def model_info(state: ServiceState) -> dict[str, Any]:
    """Body of ``GET /model``: the version served and what the last registry check found."""
    model = state.store.current
    status = state.store.status
    body: dict[str, Any] = {
        "loaded": model is not None,
        "deployment": state.settings.monitoring.deployment,
        "registry": {
            "alias": state.store.alias,
            "last_check": status.last_check,
            "last_error": status.last_error,
            "failed_version": status.failed_version,
            "loading_version": status.loading_version,
            "recent_checks": list(status.history),
        },
    }
    body.update(_describe(model) if model is not None else dict.fromkeys(_MODEL_FIELDS))
    return body


_MODEL_FIELDS = (
    "name",
    "version",
    "alias",
    "run_id",
    "training_window",
    "data_hash",
    "promotion_reason",
    "metrics",
    "fast_path",
    "loaded_at",
)


def _describe(model: LoadedModel) -> dict[str, Any]:
    metrics = {k.removeprefix("test_"): v for k, v in model.tags.items() if k.startswith("test_")}
    return {
        "name": model.name,
        "version": model.version,
        "alias": model.alias,
        "run_id": model.run_id,
        "training_window": model.tags.get("training_window"),
        "data_hash": model.tags.get("data_hash"),
        "promotion_reason": model.tags.get("promotion_reason"),
        "metrics": metrics,
        "fast_path": model.fast_path,
        "loaded_at": model.loaded_at,
    }


def _prediction(scored: Scored, row: int) -> dict[str, Any]:
    return {
        "probability": float(scored.probabilities[row]),
        "risk_band": scored.bands[row],
        "decision": scored.decisions[row],
        "top_contributions": scored.reasons[row],
    }


def _envelope(scored: Scored, settings: Settings) -> dict[str, Any]:
    return {
        "request_id": scored.log.request_id,
        "model_name": scored.model.name,
        "model_version": scored.model.version,
        "threshold": settings.serving.decision_threshold,
        "explanation": scored.explanation,
        "contribution_scale": CONTRIBUTION_SCALE,
    }


def single_response(scored: Scored, settings: Settings) -> dict[str, Any]:
    """Body of ``POST /predict``."""
    return {**_envelope(scored, settings), **_prediction(scored, 0)}


def batch_response(scored: Scored, settings: Settings) -> dict[str, Any]:
    """Body of ``POST /predict/batch``."""
    rows = [_prediction(scored, i) for i in range(len(scored.bands))]
    return {**_envelope(scored, settings), "predictions": rows}


def field_errors(errors: list[ErrorDetails] | Any) -> list[dict[str, str]]:
    """One ``{field, message}`` per validation error; input values are never echoed."""
    result = []
    for error in errors:
        parts = [p for p in error["loc"] if p != "body"]
        field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".")
        result.append({"field": field or "body", "message": str(error["msg"])})
    return result
