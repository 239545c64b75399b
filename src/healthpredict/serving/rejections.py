"""Records refused by validation, kept as a count per field for the monitors' quality check.

A 422 tells the caller what is wrong; the monitoring store also needs to know, because a share
of refused records is how an upstream change (a field recoded, a column renamed) shows up in a
deployment. Only where each refused record sat, which fields broke the contract and when the
encounter happened are kept: never a value, which may be anything, identifiers included.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError

from healthpredict.monitoring.store import RejectedRequest
from healthpredict.serving.schemas import DISCHARGE_TIME, DischargeTime

_RECORD_PATHS = {"/predict": None, "/predict/batch": "encounters"}
_TIME = TypeAdapter(DischargeTime)


def refused_records(
    path: str, problems: Sequence[Any], body: Any, deployment: str, request_id: str
) -> RejectedRequest | None:
    """The refused records of a prediction request, or None when no record is at fault (a
    malformed body, a missing ``encounters`` list, another endpoint)."""
    if path not in _RECORD_PATHS:
        return None
    container = _RECORD_PATHS[path]
    by_record: dict[int, list[str]] = {}
    for problem in problems:
        located = _locate(tuple(problem.get("loc", ())), container)
        if located is not None:
            position, field = located
            by_record.setdefault(position, [])
            if field not in by_record[position]:
                by_record[position].append(field)
    if not by_record:
        return None
    now = datetime.now(UTC)
    positions = sorted(by_record)
    records = body.get(container) if container and isinstance(body, dict) else [body]
    return RejectedRequest(
        request_id,
        now,
        deployment,
        positions,
        [by_record[p] for p in positions],
        [_occurred(records, p, now) for p in positions],
    )


def _locate(loc: tuple[Any, ...], container: str | None) -> tuple[int, str] | None:
    """``(record index, field)`` of one error location such as ``body.encounters.3.age``."""
    parts = list(loc[1:]) if loc[:1] == ("body",) else list(loc)
    if container is None:
        return (0, str(parts[0])) if parts else None
    if len(parts) >= 3 and parts[0] == container and isinstance(parts[1], int):
        return parts[1], str(parts[2])
    return None


def _occurred(records: Any, position: int, now: datetime) -> datetime:
    """The refused record's discharge time when it has a valid one, else the request time."""
    try:
        value = records[position].get(DISCHARGE_TIME)
        return _TIME.validate_python(value) if value is not None else now
    except (AttributeError, IndexError, KeyError, TypeError, ValidationError):
        return now
