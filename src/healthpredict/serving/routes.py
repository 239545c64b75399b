"""The HTTP endpoints: each parses, calls one package function, and shapes the answer.

No ``from __future__ import annotations`` here: the request models are built at run time from
the contract, and FastAPI must see the classes themselves in the signatures.
"""

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from healthpredict.serving import views
from healthpredict.serving.schemas import (
    BatchResponse,
    ExplanationName,
    OutcomeReceipt,
    PredictionResponse,
    Problem,
    batch_model,
    encounter_model,
    outcome_batch_model,
)
from healthpredict.serving.scoring import predict_records, record_outcomes
from healthpredict.serving.security import (
    admin_key_scheme,
    api_key_scheme,
    require_admin_key,
    require_api_key,
)

_PROBLEMS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "description": text}
    for code, text in {
        400: "Malformed JSON",
        401: "Missing or invalid key",
        413: "Body too large",
        422: "Invalid field values (each bad field is named)",
        503: "No model loaded yet",
    }.items()
}
_OUTCOME_PROBLEMS: dict[int | str, dict[str, Any]] = {
    **{code: _PROBLEMS[code] for code in (400, 401, 413, 422)},
    409: {"model": Problem, "description": "Contradicts a recorded outcome; nothing written"},
    503: {"model": Problem, "description": "The monitoring store cannot be reached"},
}


ExplanationParam = Annotated[
    ExplanationName,
    Query(description="'path': fast path attributions; 'shap': exact Tree SHAP; 'none'."),
]


def _state(request: Request) -> views.ServiceState:
    return request.app.state.service


async def api_key(request: Request, key: str | None = Security(api_key_scheme)) -> None:
    """Require the prediction API key."""
    require_api_key(request, key)


async def admin_key(request: Request, key: str | None = Security(admin_key_scheme)) -> None:
    """Require the admin key."""
    require_admin_key(request, key)


def build_router(max_batch_size: int, max_outcomes: int) -> APIRouter:
    """All endpoints; the batch schemas carry the configured size bounds."""
    router = APIRouter()
    _add_predict(router, encounter_model())
    _add_batch(router, batch_model(max_batch_size))
    _add_outcomes(router, outcome_batch_model(max_outcomes))
    operations: list[tuple[str, Any, str, dict[str, Any]]] = [
        ("/health", health, "GET", {"summary": "The process is alive"}),
        (
            "/ready",
            ready,
            "GET",
            {
                "summary": "A model is loaded and answers",
                "responses": {503: {"description": "Not ready, with the reason"}},
            },
        ),
        (
            "/model",
            model,
            "GET",
            {
                "summary": "The model version served, its training data and metrics",
                "dependencies": [Depends(api_key)],
                "responses": _PROBLEMS,
            },
        ),
        ("/metrics", metrics, "GET", {"summary": "Prometheus metrics"}),
        (
            "/admin/reload",
            reload,
            "POST",
            {
                "summary": "Check the champion alias now; swap if it moved",
                "dependencies": [Depends(admin_key)],
                "responses": _PROBLEMS,
            },
        ),
    ]
    for path, endpoint, method, options in operations:
        router.add_api_route(path, endpoint, methods=[method], tags=["operations"], **options)
    return router


def _add_predict(router: APIRouter, Encounter: type[BaseModel]) -> None:  # noqa: N803 (a class)
    @router.post(
        "/predict",
        tags=["predictions"],
        response_model=PredictionResponse,
        dependencies=[Depends(api_key)],
        responses=_PROBLEMS,
        summary="Risk of one encounter",
    )
    async def predict(
        request: Request,
        encounter: Encounter,  # type: ignore[valid-type]
        explanation: ExplanationParam = "path",
    ) -> dict[str, Any]:
        state = _state(request)
        # One record scores in well under a millisecond: cheaper inline than a thread hop.
        args = (state.settings, state.salt, request.state.request_id, explanation)
        scored = predict_records(state.store.current, [_fields(encounter)], *args)
        state.record(scored)
        return views.single_response(scored, state.settings)


def _add_batch(router: APIRouter, EncounterBatch: type[BaseModel]) -> None:  # noqa: N803 (a class)
    @router.post(
        "/predict/batch",
        tags=["predictions"],
        response_model=BatchResponse,
        dependencies=[Depends(api_key)],
        responses=_PROBLEMS,
        summary="Risks of many encounters",
    )
    async def predict_batch(
        request: Request,
        batch: EncounterBatch,  # type: ignore[valid-type]
        explanation: ExplanationParam = "path",
    ) -> dict[str, Any]:
        state = _state(request)
        records = [_fields(e) for e in batch.encounters]  # type: ignore[attr-defined]
        args = (state.settings, state.salt, request.state.request_id, explanation)
        # Many records: scored in a worker thread so the event loop keeps answering.
        scored = await run_in_threadpool(predict_records, state.store.current, records, *args)
        state.record(scored)
        return views.batch_response(scored, state.settings)


def _add_outcomes(router: APIRouter, OutcomeBatch: type[BaseModel]) -> None:  # noqa: N803
    @router.post(
        "/outcomes",
        tags=["outcomes"],
        response_model=OutcomeReceipt,
        dependencies=[Depends(api_key)],
        responses=_OUTCOME_PROBLEMS,
        summary="Readmission outcomes of encounters predicted earlier",
    )
    async def post_outcomes(request: Request, batch: OutcomeBatch) -> dict[str, Any]:  # type: ignore[valid-type]
        state = _state(request)
        records = batch.outcomes  # type: ignore[attr-defined]
        # A database transaction: in a worker thread, so predictions keep being answered.
        report = await run_in_threadpool(record_outcomes, state, records)
        return asdict(report)


async def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "alive"}


async def ready(request: Request) -> JSONResponse:
    """Readiness: a model is loaded (200), or why not (503)."""
    ok, body = views.readiness(_state(request))
    return JSONResponse(body, status_code=200 if ok else 503)


async def model(request: Request) -> dict[str, Any]:
    """The served version, its provenance, and the last registry check."""
    return views.model_info(_state(request))


async def metrics(request: Request) -> Response:
    """Prometheus exposition of the app's own registry."""
    registry = _state(request).metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


async def reload(request: Request) -> dict[str, Any]:
    """Check the alias now (in a worker thread: a load takes seconds)."""
    state = _state(request)
    outcome = await run_in_threadpool(state.store.refresh)
    return {"outcome": outcome, "model": views.model_info(state)}


def _fields(model: BaseModel) -> dict[str, Any]:
    """The validated fields as a plain dict (pydantic keeps them in ``__dict__``)."""
    return dict(model.__dict__)
