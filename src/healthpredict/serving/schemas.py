"""Request and response schemas of the prediction API, derived from the written data contract.

The encounter schema is generated from :data:`healthpredict.data.schema.COLUMNS`, so the API
accepts exactly what the contract allows: enumerations for categories, ranges for integers,
the ICD-9 pattern for diagnoses, null for a missing value where the contract allows missing.
Unknown fields are rejected, so a misspelt optional field cannot silently become null.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model

from healthpredict.data.schema import COLUMNS, ICD9_PATTERN, ID_COLUMNS, ColumnSpec, Kind
from healthpredict.serving.examples import EXAMPLE_ENCOUNTER

CONTRIBUTION_SCALE = (
    "uncalibrated log-odds of the LightGBM boosters, averaged over the calibration ensemble; "
    "positive values push the risk up. explanation 'path': attributions along each tree's "
    "decision path (fast); 'shap': exact Tree SHAP values; 'none': not computed"
)
ExplanationName = Literal["path", "shap", "none"]
# Not a contract column: when the encounter happened, for the monitoring windows only.
DISCHARGE_TIME = "discharge_time"


def _aware(moment: datetime) -> datetime:
    # A time without an offset is read as UTC, on every machine alike; every time is kept in
    # UTC (SQLite stores the wall clock only, so mixed offsets would compare wrongly).
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


DischargeTime = Annotated[datetime, AfterValidator(_aware)]


def _not_missing_token(value: str) -> str:
    if value.strip() in ("", "?"):
        raise ValueError("use null for a missing value, not an empty string or '?'")
    return value


def _field_type(spec: ColumnSpec) -> Any:
    """The pydantic type of one contract column."""
    if spec.allowed is not None:
        annotation: Any = Literal[spec.allowed]
    elif spec.kind is Kind.INTEGER:
        annotation = Annotated[int, Field(strict=True, ge=spec.minimum, le=spec.maximum)]
    elif spec.kind is Kind.ICD9:
        annotation = Annotated[str, Field(pattern=ICD9_PATTERN.pattern)]
    else:
        annotation = Annotated[
            str, Field(max_length=spec.max_length), AfterValidator(_not_missing_token)
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


class PredictionResponse(Prediction):
    """``POST /predict``: one prediction, with its model and settings."""

    request_id: str
    model_name: str
    model_version: str
    threshold: float
    explanation: ExplanationName
    contribution_scale: str = CONTRIBUTION_SCALE


class BatchResponse(BaseModel):
    """``POST /predict/batch``: predictions in request order."""

    request_id: str
    model_name: str
    model_version: str
    threshold: float
    explanation: ExplanationName
    contribution_scale: str = CONTRIBUTION_SCALE
    predictions: list[Prediction]


class Problem(BaseModel):
    """Every 4xx/5xx answer: a message, and for bad input one entry per bad field."""

    detail: str
    errors: list[dict[str, str]] = Field(default_factory=list)


def outcome_batch_model(max_size: int) -> type[BaseModel]:
    """The ``POST /outcomes`` request model, bounded to ``max_size`` outcomes."""
    from healthpredict.loop.outcomes import OutcomeRecord

    items = Annotated[list[OutcomeRecord], Field(min_length=1, max_length=max_size)]
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
