"""The HTTP endpoints: each parses, calls one package function, and shapes the answer.

No ``from __future__ import annotations`` here: the request models are built at run time from
the contract, and FastAPI must see the classes themselves in the signatures.

``POST /predict`` is the hot path and parses its request itself (key, query, body straight
from bytes) and answers with ready JSON bytes: FastAPI's dependency solving and response
validation cost more than the model does. Its OpenAPI entry is declared by hand to match
(security, parameter, body), and the contract test checks it against the running service.
"""

from collections.abc import Callable
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from pydantic_core import to_json
from starlette.types import Receive, Scope, Send

from healthpredict.serving import views
from healthpredict.serving.schemas import (
    BatchResponse,
    ExplanationName,
    Health,
    ModelInfo,
    NotReady,
    OutcomeReceipt,
    PredictionResponse,
    Problem,
    Ready,
    ReloadOutcome,
    batch_model,
    encounter_model,
    outcome_batch_model,
    parse_body,
    parse_explanation,
)
from healthpredict.serving.scoring import predict_records, record_outcomes
from healthpredict.serving.security import (
    ADMIN_KEY_HEADER,
    API_KEY_HEADER,
    API_KEY_SCHEME,
    admin_key_scheme,
    api_key_scheme,
    require_admin_key,
    require_api_key,
)

EXPLANATION_HELP = "'path': fast path attributions; 'shap': exact Tree SHAP; 'none'."


def _header(description: str) -> dict[str, Any]:
    return {"description": description, "required": True, "schema": {"type": "string"}}


# Every answer carries its request id (set by the middleware, 404s and 413s included).
_REQUEST_ID = {
    "X-Request-ID": _header(
        "The request's id: the caller's X-Request-ID when it is 1 to 64 of [A-Za-z0-9._-], "
        "else a new one."
    )
}


def _answer(
    description: str, model: type[BaseModel] | None = None, **headers: dict[str, Any]
) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description, "headers": {**_REQUEST_ID, **headers}}
    if model is not None:
        answer["model"] = model
    return answer


def _unauthorized(header: str) -> dict[str, Any]:
    www = _header(f"'{header}': the header that must carry the key.")
    return _answer(f"Missing or invalid {header}", Problem, **{"WWW-Authenticate": www})


def _retry(seconds: int, description: str) -> dict[str, Any]:
    retry = _header(f"Seconds to wait before retrying ({seconds}).")
    return _answer(description, Problem, **{"Retry-After": retry})


# Accepted on every operation; never refused (an unsafe one is replaced, not echoed).
_REQUEST_ID_PARAMETER: dict[str, Any] = {
    "name": "X-Request-ID",
    "in": "header",
    "required": False,
    "description": "Optional caller's id, echoed when it is 1 to 64 of [A-Za-z0-9._-].",
    "schema": {"type": "string"},
}
_EXTRA: dict[str, Any] = {"parameters": [_REQUEST_ID_PARAMETER]}

_ANSWERS: dict[int, dict[str, Any]] = {
    200: _answer("Success"),
    400: _answer("Malformed JSON (the position is named)", Problem),
    401: _unauthorized(API_KEY_HEADER),
    413: _answer("Request body larger than max_body_bytes", Problem),
    422: _answer("Invalid field or parameter values (each one is named)", Problem),
    503: _retry(5, "No model loaded yet (the reason is given)"),
}


def _responses(
    *codes: int, others: dict[int, dict[str, Any]] | None = None
) -> dict[int | str, dict[str, Any]]:
    """The documented answers of one operation: ``codes`` from the common set, plus others."""
    answers: dict[int | str, dict[str, Any]] = {code: _ANSWERS[code] for code in codes}
    for code, answer in (others or {}).items():
        answers[code] = answer
    return answers


# /metrics answers text: its 413 is JSON all the same, so its content is spelt out.
_METRICS_TOO_LARGE = {
    "description": _ANSWERS[413]["description"],
    "headers": _REQUEST_ID,
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
}


_PREDICTION_ANSWERS = _responses(200, 400, 401, 413, 422, 503)
# POST /predict parses its own request: documented here as FastAPI would document it.
_PREDICT_OPENAPI: dict[str, Any] = {
    "security": [{API_KEY_SCHEME: []}],
    "parameters": [
        {
            "name": "explanation",
            "in": "query",
            "required": False,
            "description": EXPLANATION_HELP,
            "schema": {
                "type": "string",
                "enum": ["path", "shap", "none"],
                "default": "path",
                "title": "Explanation",
                "description": EXPLANATION_HELP,
            },
        },
        _REQUEST_ID_PARAMETER,
    ],
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Encounter"}}},
    },
}

ExplanationParam = Annotated[ExplanationName, Query(description=EXPLANATION_HELP)]


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
    _add_operations(router)
    return router


def _add_operations(router: APIRouter) -> None:
    admin_answers = _responses(
        200,
        413,
        others={
            401: _unauthorized(ADMIN_KEY_HEADER),
            403: _answer("Admin endpoints are disabled: no admin key is configured", Problem),
        },
    )
    operations: list[tuple[str, Any, str, dict[str, Any]]] = [
        ("/health", health, "GET", {"summary": "The process is alive", "response_model": Health}),
        (
            "/ready",
            ready,
            "GET",
            {
                "summary": "A model is loaded and answers",
                "response_model": Ready,
                "responses": _responses(
                    200, 413, others={503: _answer("Not ready, with the reason", NotReady)}
                ),
            },
        ),
        (
            "/model",
            model,
            "GET",
            {
                "summary": "The model version served, its training data and metrics",
                "dependencies": [Depends(api_key)],
                "response_model": ModelInfo,
                "responses": _responses(200, 401, 413),
            },
        ),
        (
            "/metrics",
            metrics,
            "GET",
            {
                "summary": "Prometheus metrics (text exposition format)",
                "response_class": PlainTextResponse,
                "responses": {200: _answer("Prometheus text format"), 413: _METRICS_TOO_LARGE},
            },
        ),
        (
            "/admin/reload",
            reload,
            "POST",
            {
                "summary": "Check the champion alias now; swap if it moved",
                "dependencies": [Depends(admin_key)],
                "response_model": ReloadOutcome,
                "responses": admin_answers,
            },
        ),
    ]
    for path, endpoint, method, options in operations:
        options.setdefault("responses", _responses(200, 413))
        router.add_api_route(
            path, endpoint, methods=[method], tags=["operations"], openapi_extra=_EXTRA, **options
        )


class DirectRoute(APIRoute):
    """A route FastAPI documents (response model, answers, ``openapi_extra``) but does not
    run: its endpoint takes the :class:`Request` and returns the :class:`Response` itself.

    No dependencies are solved, no response is validated, and no per-route exit stacks are
    opened; exceptions go to the app's handlers through Starlette's exception middleware.
    """

    def __init__(self, path: str, endpoint: Callable[..., Any], **options: Any) -> None:
        """Register ``endpoint(request) -> Response`` under ``path``."""
        super().__init__(path, endpoint, **options)

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            response = await endpoint(Request(scope, receive, send))
            await response(scope, receive, send)

        self.app = app


def _add_predict(router: APIRouter, Encounter: type[BaseModel]) -> None:  # noqa: N803 (a class)
    async def predict(request: Request) -> Response:
        state = _state(request)
        require_api_key(request, request.headers.get(API_KEY_HEADER))
        explanation, problems = parse_explanation(request.scope["query_string"])
        content_type = request.headers.get("content-type")
        encounter = parse_body(Encounter, await request.body(), content_type, problems)
        # One record scores in well under a millisecond: cheaper inline than a thread hop.
        args = (state.settings, state.salt, request.state.request_id, explanation)
        scored = predict_records(state.store.current, [_fields(encounter)], *args)
        state.record(scored)
        return _json(views.single_response(scored, state.settings))

    router.add_api_route(
        "/predict",
        predict,
        methods=["POST"],
        tags=["predictions"],
        response_model=PredictionResponse,
        responses=_PREDICTION_ANSWERS,
        summary="Risk of one encounter",
        openapi_extra=_PREDICT_OPENAPI,
        route_class_override=DirectRoute,
    )


def _add_batch(router: APIRouter, EncounterBatch: type[BaseModel]) -> None:  # noqa: N803 (a class)
    @router.post(
        "/predict/batch",
        tags=["predictions"],
        response_model=BatchResponse,
        dependencies=[Depends(api_key)],
        responses=_PREDICTION_ANSWERS,
        summary="Risks of many encounters",
        openapi_extra=_EXTRA,
    )
    async def predict_batch(
        request: Request,
        batch: EncounterBatch,  # type: ignore[valid-type]
        explanation: ExplanationParam = "path",
    ) -> Response:
        state = _state(request)
        records = [_fields(e) for e in batch.encounters]  # type: ignore[attr-defined]
        args = (state.settings, state.salt, request.state.request_id, explanation)
        # Many records: scored in a worker thread so the event loop keeps answering.
        scored = await run_in_threadpool(predict_records, state.store.current, records, *args)
        state.record(scored)
        return _json(views.batch_response(scored, state.settings))


def _add_outcomes(router: APIRouter, OutcomeBatch: type[BaseModel]) -> None:  # noqa: N803
    answers = _responses(
        200,
        400,
        401,
        413,
        422,
        others={
            409: _answer("Contradicts a recorded outcome; nothing written", Problem),
            503: _retry(30, "The monitoring store cannot be reached; nothing written"),
        },
    )

    @router.post(
        "/outcomes",
        tags=["outcomes"],
        response_model=OutcomeReceipt,
        dependencies=[Depends(api_key)],
        responses=answers,
        summary="Readmission outcomes of encounters predicted earlier",
        openapi_extra=_EXTRA,
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


def _json(body: dict[str, Any]) -> Response:
    """A JSON answer from plain values (already in the documented shape: no validation)."""
    return Response(to_json(body), media_type="application/json")


def _fields(model: BaseModel) -> dict[str, Any]:
    """The validated fields as a plain dict (pydantic keeps them in ``__dict__``)."""
    return dict(model.__dict__)
