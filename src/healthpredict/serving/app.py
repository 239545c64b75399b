"""The app factory: settings in, a FastAPI app out; nothing starts until the app does.

On start-up (the ASGI lifespan) the prediction-log writer starts and the model store loads the
champion in the background: the service answers ``/health`` at once, and ``/ready`` says
why it is not ready until a model is loaded.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from healthpredict import __version__
from healthpredict.data.pseudonym import load_or_create_salt
from healthpredict.monitoring.outcomes import OutcomeError
from healthpredict.monitoring.store import (
    PredictionLogWriter,
    StoreUnavailableError,
    make_engine,
)
from healthpredict.serving import rejections, views
from healthpredict.serving.metrics import ServiceMetrics
from healthpredict.serving.middleware import ServiceMiddleware
from healthpredict.serving.model_store import LoadedModel, ModelStore
from healthpredict.serving.routes import build_router
from healthpredict.serving.scoring import ModelUnavailableError
from healthpredict.serving.security import check_keys
from healthpredict.settings import Settings, get_settings

logger = logging.getLogger(__name__)
DESCRIPTION = """Calibrated 30-day readmission risk for diabetic inpatients, from the registered
champion model. Prediction endpoints need the `X-API-Key` header; `/admin/reload` needs
`X-Admin-Key`. Contributions are on the uncalibrated log-odds scale of the boosters."""


def create_app(settings: Settings | None = None, store: ModelStore | None = None) -> FastAPI:
    """Build the prediction service.

    Args:
        settings: Defaults to :func:`get_settings`.
        store: The model store; by default one on the configured registry's champion.

    Raises:
        ServingConfigError: No API key is configured, or the keys are unsafe.
    """
    settings = settings or get_settings()
    check_keys(settings)
    engine = make_engine(settings.monitoring_url)
    writer = PredictionLogWriter(
        engine, settings.serving.log_flush_seconds, settings.serving.log_flush_rows
    )
    state = views.ServiceState(
        settings, store or ModelStore(settings), writer, ServiceMetrics(), engine
    )
    state.metrics.watch(state.metric_state)
    previous = state.store.on_swap
    state.store.on_swap = _settle_heap if previous is None else _chain(previous, _settle_heap)
    app = FastAPI(
        title="Health Predict", version=__version__, description=DESCRIPTION, lifespan=_lifespan
    )
    app.state.service = state
    app.include_router(
        build_router(settings.serving.max_batch_size, settings.serving.max_outcomes_per_request)
    )
    _add_error_handlers(app)
    if settings.serving.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.serving.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["X-API-Key", "Content-Type"],
        )
    app.add_middleware(
        ServiceMiddleware, metrics=state.metrics, max_body_bytes=settings.serving.max_body_bytes
    )
    return app


def _settle_heap(_model: LoadedModel) -> None:
    """After a model is swapped in: collect the old one's cycles once, then freeze the heap.

    With a model loaded the process holds some 350,000 objects; a full (generation 2)
    collection walks them all, about 150 ms with the GIL held (every request in flight
    waits), every few thousand requests. Frozen objects are skipped by every later
    collection. Runs in the model store's thread, once per load.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _chain(*steps: Callable[[LoadedModel], None]) -> Callable[[LoadedModel], None]:
    def run(model: LoadedModel) -> None:
        for step in steps:
            step(model)

    return run


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: views.ServiceState = app.state.service
    state.salt = load_or_create_salt(state.settings)
    state.writer.start()
    state.store.start(state.settings.serving.model_poll_seconds)
    try:
        yield
    finally:
        state.store.stop()
        state.writer.close()
        state.engine.dispose()


def _problem(
    status: int,
    detail: str,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        {"detail": detail, "errors": errors or []}, status_code=status, headers=headers
    )


def _add_error_handlers(app: FastAPI) -> None:
    """Every error answers as a :class:`Problem`; bad input names each bad field."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = list(error.errors())
        if any(p["type"] == "json_invalid" for p in problems):
            where = problems[0]["loc"][-1]
            reason = problems[0].get("ctx", {}).get("error", "invalid JSON")
            return _problem(400, f"malformed JSON at character {where}: {reason}")
        errors = views.field_errors(problems)
        fields = ", ".join(dict.fromkeys(e["field"] for e in errors))
        state: views.ServiceState = request.app.state.service
        rejected = rejections.refused_records(
            request.url.path,
            problems,
            error.body,
            state.settings.monitoring.deployment,
            getattr(request.state, "request_id", "?"),
        )
        if rejected is not None:
            state.writer.submit(rejected)
        return _problem(422, f"invalid request: {len(errors)} problem(s) in {fields}", errors)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return _problem(error.status_code, str(error.detail), headers=dict(error.headers or {}))

    @app.exception_handler(OutcomeError)
    async def refused_outcomes(request: Request, error: OutcomeError) -> JSONResponse:
        return _problem(409, str(error))

    @app.exception_handler(StoreUnavailableError)
    async def store_down(request: Request, error: StoreUnavailableError) -> JSONResponse:
        return _problem(503, str(error), headers={"Retry-After": "30"})

    @app.exception_handler(ModelUnavailableError)
    async def unavailable(request: Request, error: ModelUnavailableError) -> JSONResponse:
        reason = views.not_ready_reason(request.app.state.service)
        return _problem(503, reason, headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        request_id: Any = getattr(request.state, "request_id", "?")
        logger.exception("unexpected error in request %s", request_id)
        return _problem(500, f"internal error (request id {request_id})")
