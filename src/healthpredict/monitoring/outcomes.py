"""Readmission outcomes, arriving weeks after the prediction, joined to what was predicted.

An outcome is ``{encounter_id, readmitted}``: ``readmitted`` in the extract's own vocabulary
(``"<30"``, ``">30"``, ``"NO"``) or as the 30-day answer itself (a boolean). The encounter id is
hashed with the service's salt on arrival, exactly as the service hashes it in a prediction
request, and only the hash is stored.

What a second outcome for the same encounter does (the choice, documented in
docs/monitoring_and_retraining.md): the same 30-day answer again changes nothing, so any load
can be repeated; a *different* answer is refused with the reason, and the whole load with it,
because a label that silently changes under a model that was gated on the first one would make
every figure computed since unreproducible. A correction is an explicit act: delete the row
and load the corrected one. An outcome for an encounter the log has never seen is kept (its
prediction may still be on its way, or was made before logging began) and reported as
unmatched.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import pandas as pd
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictInt,
    ValidationError,
    WithJsonSchema,
)
from sqlalchemy import Engine, insert, select, text
from sqlalchemy.exc import IntegrityError

from healthpredict.data.prepare import POSITIVE_LABEL
from healthpredict.data.pseudonym import keyed_hash
from healthpredict.errors import HealthPredictError
from healthpredict.monitoring.tables import create_schema, outcomes, predictions

VOCABULARY = ("<30", ">30", "NO")
_BOOLEAN_TEXT = {"true": True, "false": False, "1": True, "0": False}
_CHUNK = 2000  # keys per IN (...) query: well below every database's parameter limit
MAX_SHOWN = 10  # problems named in one error message
_ANALYZE_AFTER = 1000  # new rows after which PostgreSQL's statistics of the table are renewed


class OutcomeError(HealthPredictError):
    """Outcomes that cannot be recorded; nothing of the load was written."""


def _readmitted(value: Any) -> str | bool:
    if isinstance(value, bool) or value in VOCABULARY:
        return value
    raise ValueError(
        "must be '<30', '>30' or 'NO' (the extract's vocabulary) or true/false (readmitted "
        "within 30 days)"
    )


# One validator for both forms, so that an error names the field, not a branch of a union.
Readmitted = Annotated[
    str | bool,
    PlainValidator(_readmitted),
    WithJsonSchema({"oneOf": [{"type": "string", "enum": list(VOCABULARY)}, {"type": "boolean"}]}),
]


class OutcomeRecord(BaseModel):
    """One outcome as it arrives."""

    model_config = ConfigDict(extra="forbid", title="Outcome")
    encounter_id: StrictInt = Field(
        ge=1, le=10**12, description="The encounter's id, as sent with its prediction."
    )
    readmitted: Readmitted = Field(
        description="'<30', '>30' or 'NO' as in the extract, or true/false: readmitted within "
        "30 days."
    )

    @property
    def readmitted_30d(self) -> bool:
        """The answer the model predicts."""
        if isinstance(self.readmitted, bool):
            return self.readmitted
        return self.readmitted == POSITIVE_LABEL

    @property
    def reported_as(self) -> str:
        """The value as given, in text."""
        return (
            str(self.readmitted).lower() if isinstance(self.readmitted, bool) else self.readmitted
        )


@dataclass(frozen=True)
class OutcomeReport:
    """What one load did."""

    received: int
    recorded: int
    unchanged: int
    unmatched: int

    def summary(self) -> str:
        """One line for the command line."""
        return (
            f"{self.received:,} outcome(s): {self.recorded:,} recorded, {self.unchanged:,} "
            f"already known, {self.unmatched:,} for encounters the log has not seen (kept)"
        )


def parse_records(rows: Sequence[Mapping[str, Any]], where: str = "row") -> list[OutcomeRecord]:
    """Validate every row; rows are numbered from 1 in the message.

    Raises:
        OutcomeError: Naming each bad row and field (the first :data:`MAX_SHOWN` of them).
    """
    parsed, problems = [], []
    for number, row in enumerate(rows, start=1):
        try:
            parsed.append(OutcomeRecord.model_validate(dict(row)))
        except ValidationError as error:
            for detail in error.errors():
                field = ".".join(str(p) for p in detail["loc"]) or "record"
                problems.append(f"{where} {number}, {field}: {detail['msg']}")
    if problems:
        shown = "; ".join(problems[:MAX_SHOWN])
        more = f" (and {len(problems) - MAX_SHOWN} more)" if len(problems) > MAX_SHOWN else ""
        raise OutcomeError(f"{len(problems)} invalid outcome field(s): {shown}{more}")
    return parsed


def record(
    engine: Engine, deployment: str, records: Sequence[OutcomeRecord], salt: bytes, source: str
) -> OutcomeReport:
    """Store ``records`` for ``deployment`` in one transaction: all of them or none.

    Raises:
        OutcomeError: An outcome contradicts one already recorded (or another in the same
            load); nothing is written.
    """
    keys = keyed_hash(pd.Series([r.encounter_id for r in records], dtype=object), salt).tolist()
    incoming = _deduplicated(records, keys)
    create_schema(engine)
    for attempt in range(2):  # a concurrent load may insert the same key between read and write
        try:
            report = _record_once(engine, deployment, incoming, source, len(records))
            break
        except IntegrityError:
            if attempt:
                raise
    if report.recorded >= _ANALYZE_AFTER and engine.dialect.name == "postgresql":
        # Fresh statistics: with the table's old ones (say, empty) the planner answers the next
        # load's look-ups by filtering every row, seconds per chunk instead of milliseconds.
        with engine.begin() as connection:
            connection.execute(text("ANALYZE outcomes"))
    return report


def _deduplicated(
    records: Sequence[OutcomeRecord], keys: list[str]
) -> dict[str, tuple[OutcomeRecord, int]]:
    seen: dict[str, tuple[OutcomeRecord, int]] = {}
    conflicts = []
    for number, (outcome, key) in enumerate(zip(records, keys, strict=True), start=1):
        if key in seen and seen[key][0].readmitted_30d != outcome.readmitted_30d:
            conflicts.append(
                f"record {number}: encounter {outcome.encounter_id} has another answer in "
                f"record {seen[key][1]} of the same load"
            )
        seen.setdefault(key, (outcome, number))
    if conflicts:
        raise OutcomeError(_conflict_message(conflicts))
    return seen


def _record_once(
    engine: Engine,
    deployment: str,
    incoming: dict[str, tuple[OutcomeRecord, int]],
    source: str,
    received: int,
) -> OutcomeReport:
    now = datetime.now(UTC)
    with engine.begin() as connection:
        known = _known(connection, deployment, list(incoming))
        conflicts = [
            f"record {number}: encounter {outcome.encounter_id} is already recorded as "
            f"readmitted within 30 days = {str(known[key]).lower()}"
            for key, (outcome, number) in incoming.items()
            if key in known and known[key] != outcome.readmitted_30d
        ]
        if conflicts:
            raise OutcomeError(_conflict_message(conflicts))
        new = [
            {
                "deployment": deployment,
                "encounter_key": key,
                "readmitted_30d": outcome.readmitted_30d,
                "reported_as": outcome.reported_as,
                "source": source[:300],
                "received_at": now,
            }
            for key, (outcome, _) in incoming.items()
            if key not in known
        ]
        if new:
            connection.execute(insert(outcomes), new)
        matched = _logged(connection, deployment, list(incoming))
    return OutcomeReport(received, len(new), received - len(new), len(incoming) - matched)


def _conflict_message(conflicts: list[str]) -> str:
    shown = "; ".join(conflicts[:MAX_SHOWN])
    more = f" (and {len(conflicts) - MAX_SHOWN} more)" if len(conflicts) > MAX_SHOWN else ""
    return (
        f"{len(conflicts)} outcome(s) contradict what is recorded, nothing was written: "
        f"{shown}{more}. Outcomes are not overwritten: delete the recorded row to correct one"
    )


def _chunks(keys: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(keys), _CHUNK):
        yield keys[start : start + _CHUNK]


def _known(connection: Any, deployment: str, keys: list[str]) -> dict[str, bool]:
    found: dict[str, bool] = {}
    for chunk in _chunks(keys):
        query = select(outcomes.c.encounter_key, outcomes.c.readmitted_30d).where(
            outcomes.c.deployment == deployment, outcomes.c.encounter_key.in_(chunk)
        )
        found.update({key: bool(value) for key, value in connection.execute(query)})
    return found


def _logged(connection: Any, deployment: str, keys: list[str]) -> int:
    matched = 0
    for chunk in _chunks(keys):
        query = (
            select(predictions.c.encounter_key)
            .where(predictions.c.deployment == deployment, predictions.c.encounter_key.in_(chunk))
            .distinct()
        )
        matched += len(connection.execute(query).all())
    return matched


def read_file(location: str) -> list[dict[str, Any]]:
    """The rows of a CSV or Parquet file of outcomes, as typed records.

    Raises:
        DataSourceError: The file cannot be read.
        OutcomeError: It is neither CSV nor Parquet, or lacks the two columns.
    """
    from healthpredict.data.source import read_bytes

    content = read_bytes(location)
    try:
        if content.startswith(b"PAR1"):
            frame = pd.read_parquet(io.BytesIO(content))
        else:
            frame = pd.read_csv(io.BytesIO(content), dtype=str, keep_default_na=False)
    except Exception as error:  # pandas and pyarrow raise many types for a damaged file
        raise OutcomeError(
            f"{location}: neither a readable CSV nor Parquet file: {error}"
        ) from error
    missing = {"encounter_id", "readmitted"} - set(frame.columns)
    if missing:
        raise OutcomeError(
            f"{location}: missing column(s) {', '.join(sorted(missing))}; expected "
            "encounter_id and readmitted"
        )
    rows = frame[["encounter_id", "readmitted"]].to_dict("records")
    return [_typed({str(k): v for k, v in row.items()}) for row in rows]


def _typed(row: dict[str, Any]) -> dict[str, Any]:
    """Text from a CSV as the API's JSON types; anything unparseable is left for validation."""
    encounter, readmitted = row["encounter_id"], row["readmitted"]
    if isinstance(encounter, str) and encounter.strip().isdigit():
        encounter = int(encounter.strip())
    elif hasattr(encounter, "item"):  # a numpy integer from Parquet
        encounter = encounter.item()
    if isinstance(readmitted, str) and readmitted.strip().lower() in _BOOLEAN_TEXT:
        readmitted = _BOOLEAN_TEXT[readmitted.strip().lower()]
    elif hasattr(readmitted, "item"):
        readmitted = readmitted.item()
    return {"encounter_id": encounter, "readmitted": readmitted}
