"""Request and response schemas of the prediction API, derived from the written data contract.

The encounter schema is generated from :data:`healthpredict.data.schema.COLUMNS`, so the API
accepts exactly what the contract allows: enumerations for categories, ranges for integers,
the ICD-9 pattern for diagnoses, null for a missing value where the contract allows missing.
Unknown fields are rejected, so a misspelt optional field cannot silently become null.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from functools import lru_cache
from typing import Annotated, Any, Literal, TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    create_model,
)
from starlette.datastructures import QueryParams

from healthpredict.data.schema import COLUMNS, ICD9_PATTERN, ID_COLUMNS, ColumnSpec, Kind
from healthpredict.serving.examples import EXAMPLE_ENCOUNTER

CONTRIBUTION_SCALE = (
    "uncalibrated log-odds of the LightGBM boosters, averaged over the calibration ensemble; "
    "positive values push the risk up. explanation 'path': attributions along each tree's "
    "decision path (fast); 'shap': exact Tree SHAP values; 'none': not computed"
)
ExplanationName = Literal["path", "shap", "none"]
_EXPLANATION: TypeAdapter[ExplanationName] = TypeAdapter(ExplanationName)
Body = TypeVar("Body", bound=BaseModel)
# Not a contract column: when the encounter happened, for the monitoring windows only.
DISCHARGE_TIME = "discharge_time"


def _aware(moment: datetime) -> datetime:
    # A time without an offset is read as UTC, on every machine alike; every time is kept in
    # UTC (SQLite stores the wall clock only, so mixed offsets would compare wrongly).
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# The date and the time, at least: pydantic alone would also read a number (or a string of
# digits) as a Unix time, or a bare date as midnight, which the schema's date-time is not.
_ISO_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


def _iso_text(value: Any) -> Any:
    if isinstance(value, datetime) or (isinstance(value, str) and _ISO_DATE_TIME.match(value)):
        return value
    raise ValueError("expected an ISO 8601 date and time, such as 2024-03-05T10:00:00+02:00")


DischargeTime = Annotated[datetime, BeforeValidator(_iso_text), AfterValidator(_aware)]


def _whole_number(value: Any) -> Any:
    # JSON (and its schema) make no difference between 3 and 3.0; "3", 3.5 and true stay refused.
    return int(value) if isinstance(value, float) and value.is_integer() else value


# A text value is not blank and not the file's missing token '?' (surrounding spaces aside):
# it holds a character that is neither space nor '?', or two characters that are not spaces.
# Published as the field's pattern, so the schema refuses what the validator refuses.
_NOT_MISSING = re.compile(r"[^\s?]|\S[\s\S]*\S")


def _not_missing_token(value: str) -> str:
    if not _NOT_MISSING.search(value):
        raise ValueError("use null for a missing value, not an empty string or '?'")
    return value


def _field_type(spec: ColumnSpec) -> Any:
    """The pydantic type of one contract column."""
    if spec.allowed is not None:
        annotation: Any = Literal[spec.allowed]
    elif spec.kind is Kind.INTEGER:
        # Constraints before the validator: after it, pydantic publishes them as "ge"/"le".
        annotation = Annotated[
            int,
            Field(strict=True, ge=spec.minimum, le=spec.maximum),
            BeforeValidator(_whole_number),
        ]
    elif spec.kind is Kind.ICD9:
        annotation = Annotated[str, Field(pattern=ICD9_PATTERN.pattern)]
    else:
        annotation = Annotated[
            str,
            Field(max_length=spec.max_length, json_schema_extra={"pattern": _NOT_MISSING.pattern}),
            AfterValidator(_not_missing_token),
        ]
    return annotation | None if spec.nullable or spec.name in ID_COLUMNS else annotation


def _field(spec: ColumnSpec) -> tuple[Any, Any]:
    description = spec.rule() if not spec.description else f"{spec.description}; {spec.rule()}"
    if spec.name in ID_COLUMNS:
        description = (
            f"optional; stored only as a salted hash, never used by the model. {spec.description}"
        )
        return _field_type(spec), Field(default=None, description=description)
    description = description.replace("'?' = missing", "null = missing")
    if spec.nullable:
        return _field_type(spec), Field(default=None, description=description)
    return _field_type(spec), Field(description=description)


@lru_cache(maxsize=1)
def encounter_model() -> type[BaseModel]:
    """The ``Encounter`` request model, built once from the contract."""
    fields: dict[str, Any] = {spec.name: _field(spec) for spec in COLUMNS}
    fields[DISCHARGE_TIME] = (
        DischargeTime | None,
        Field(
            default=None,
            description="optional; when the encounter ended (ISO 8601, UTC when no offset is "
            "given). It places the prediction in a monitoring window; without it, the time of "
            "the request does. Never used by the model.",
        ),
    )
    config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [EXAMPLE_ENCOUNTER]}, title="Encounter"
    )
    return create_model("Encounter", __config__=config, **fields)


def batch_model(max_size: int) -> type[BaseModel]:
    """The batch request model, bounded to ``max_size`` encounters."""
    encounter = encounter_model()
    items = Annotated[list[encounter], Field(min_length=1, max_length=max_size)]  # type: ignore[valid-type]
    example: dict[str, Any] = {
        "encounters": [EXAMPLE_ENCOUNTER, {**EXAMPLE_ENCOUNTER, "number_inpatient": 0}]
    }
    config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [example]}, title="EncounterBatch"
    )
    return create_model("EncounterBatch", __config__=config, encounters=(items, ...))


class Contribution(BaseModel):
    """How much one request field moved this prediction (see ``contribution_scale``)."""

    feature: str = Field(description="Request field, or a quantity derived from several fields.")
    value: str | float | int | None = Field(description="The field's value in this request.")
    contribution: float


class Prediction(BaseModel):
    """The risk of one encounter."""

    probability: float = Field(ge=0.0, le=1.0, description="Calibrated 30-day readmission risk.")
    risk_band: str
    decision: bool = Field(description="probability >= the configured decision threshold.")
    top_contributions: list[Contribution]


class ServedBy(BaseModel):
    """What every prediction answer says about how it was made: request, model and settings.

    Only a base: it never appears in the OpenAPI document itself (pydantic inlines inherited
    fields into each answer's schema).
    """

    request_id: str
    model_name: str
    model_version: str
    threshold: float
    explanation: ExplanationName
    contribution_scale: str = CONTRIBUTION_SCALE


class PredictionResponse(ServedBy, Prediction):
    """``POST /predict``: one prediction, with its model and settings."""


class BatchResponse(ServedBy):
    """``POST /predict/batch``: predictions in request order."""

    predictions: list[Prediction]


class FieldError(BaseModel):
    """One bad field of a refused request (its value is never echoed)."""

    field: str = Field(description="Where: 'age', 'encounters[3].age', 'query.explanation'.")
    message: str


class Problem(BaseModel):
    """Every 4xx/5xx answer: a message, and for bad input one entry per bad field."""

    detail: str
    errors: list[FieldError] = Field(default_factory=list)


class Health(BaseModel):
    """``GET /health``: the process answers."""

    status: Literal["alive"]


class LogCounters(BaseModel):
    """Rows the prediction-log writer has written, dropped (queue full) or failed to write."""

    written: int
    dropped: int
    failed: int
    last_error: str | None


class Ready(BaseModel):
    """``GET /ready`` when a model is loaded and answers."""

    ready: Literal[True]
    model_version: str
    fast_path: bool = Field(
        description="Whether the compiled fast path serves (else the pipeline)."
    )
    prediction_log: LogCounters


class NotReady(BaseModel):
    """``GET /ready`` (503) when no model is loaded, with the reason."""

    ready: Literal[False]
    reason: str
    prediction_log: LogCounters


class RegistryCheck(BaseModel):
    """What the model store's registry checks found."""

    alias: str
    last_check: datetime | None
    last_error: str | None
    failed_version: str | None
    loading_version: str | None
    recent_checks: list[str] = Field(description="Outcomes of the last checks, oldest first.")


class ModelInfo(BaseModel):
    """``GET /model``: the version served (null fields when none is loaded), and the registry."""

    loaded: bool
    deployment: str
    registry: RegistryCheck
    name: str | None
    version: str | None
    alias: str | None
    run_id: str | None
    training_window: str | None
    data_hash: str | None
    promotion_reason: str | None
    metrics: dict[str, str] | None = Field(description="Test-window metrics of the version.")
    fast_path: str | None = Field(description="Fast-path status and its parity with the pipeline.")
    loaded_at: datetime | None


class ReloadOutcome(BaseModel):
    """``POST /admin/reload``: what the registry check did, and the model served now."""

    outcome: str
    model: ModelInfo


def outcome_batch_model(max_size: int) -> type[BaseModel]:
    """The ``POST /outcomes`` request model, bounded to ``max_size`` outcomes."""
    from healthpredict.monitoring.outcomes import OutcomeRecord

    whole = OutcomeRecord.model_fields["encounter_id"]
    # The record with the same whole-number reading of encounter_id as the encounter fields.
    record = create_model(
        "OutcomeRecord",
        __base__=OutcomeRecord,
        encounter_id=(
            Annotated[int, Field(strict=True, ge=1, le=10**12), BeforeValidator(_whole_number)],
            Field(description=whole.description),
        ),
    )
    items = Annotated[list[record], Field(min_length=1, max_length=max_size)]  # type: ignore[valid-type]
    example: dict[str, Any] = {
        "outcomes": [
            {"encounter_id": 2278392, "readmitted": "NO"},
            {"encounter_id": 149190, "readmitted": True},
        ]
    }
    config = ConfigDict(extra="forbid", json_schema_extra={"examples": [example]}, title="Outcomes")
    return create_model("Outcomes", __config__=config, outcomes=(items, ...))


class OutcomeReceipt(BaseModel):
    """``POST /outcomes``: what the request added (sending it again adds nothing)."""

    received: int
    recorded: int = Field(description="New outcomes stored.")
    unchanged: int = Field(description="Outcomes already known with the same answer.")
    unmatched: int = Field(
        description="Encounters the prediction log has not seen (kept, and joined when their "
        "prediction is logged)."
    )


def parse_explanation(query_string: bytes) -> tuple[ExplanationName, list[Any]]:
    """The ``explanation`` query parameter ('path' when absent), and its errors as FastAPI's."""
    if not query_string:
        return "path", []
    value = QueryParams(query_string).get("explanation")
    if value is None:
        return "path", []
    try:
        return _EXPLANATION.validate_python(value), []
    except ValidationError as error:
        return "path", [{**e, "loc": ("query", "explanation")} for e in error.errors()]


def parse_body(model: type[Body], body: bytes, content_type: str | None, errors: list[Any]) -> Body:
    """Validate a JSON request body straight from its bytes: one pass, no intermediate dict.

    The same answers as FastAPI's own body handling (``errors`` holds problems found
    elsewhere in the request, reported with the body's): only a refused body is parsed a
    second time, to report malformed JSON by position and to log the refused records.

    Raises:
        RequestValidationError: Malformed JSON (the app answers 400) or invalid fields (422).
    """
    if not body:
        missing = {"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}
        raise RequestValidationError([*errors, missing])
    if not _is_json(content_type):
        not_json = {
            "type": "model_attributes_type",
            "loc": ("body",),
            "msg": "Input should be a valid dictionary or object to extract fields from",
            "input": None,
        }
        raise RequestValidationError([*errors, not_json])
    try:
        parsed = model.model_validate_json(body)
    except ValidationError as error:
        problems: list[Any] = error.errors()
    else:
        if errors:
            raise RequestValidationError(errors, body=None)
        return parsed
    return _refused(model, body, problems, errors)


def _refused(model: type[Body], body: bytes, problems: list[Any], errors: list[Any]) -> Body:
    try:
        document = json.loads(body)
    except json.JSONDecodeError as error:
        malformed = {
            "type": "json_invalid",
            "loc": ("body", error.pos),
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": error.msg},
        }
        raise RequestValidationError([malformed], body=error.doc) from None
    except UnicodeDecodeError as error:
        malformed = {
            "type": "json_invalid",
            "loc": ("body", error.start),
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": "not UTF-8 text"},
        }
        raise RequestValidationError([malformed], body=None) from None
    if problems and problems[0]["type"] == "json_invalid":
        # JSON that Python reads and pydantic's parser does not (NaN, UTF-16): as FastAPI does.
        try:
            parsed = model.model_validate(document)
        except ValidationError as error:
            problems = error.errors()
        else:
            if errors:
                raise RequestValidationError(errors, body=document)
            return parsed
    located = [{**p, "loc": ("body", *p["loc"])} for p in problems]
    raise RequestValidationError([*errors, *located], body=document)


def _is_json(content_type: str | None) -> bool:
    """``application/json`` or ``application/*+json``, as FastAPI requires for a JSON body."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )
