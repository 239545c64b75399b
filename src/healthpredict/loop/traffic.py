"""Where a replay sends its traffic: the real service over HTTP, or the same code in process.

:class:`HttpTraffic` is what a hospital's systems do: prediction requests to
``/predict/batch``, outcomes to ``/outcomes``, and, after a promotion, ``/admin/reload`` so the
next window is scored by the new champion. Records the service refuses (422) are set aside with
the fields the answer names, and the rest of the request is sent again, as a careful client
does. :class:`InProcessTraffic` is for what-if comparisons: the service's own scoring function
and the same validation rules, writing the same rows to the store, without a process.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import requests
from sqlalchemy import Engine, insert

from healthpredict.loop.context import LoopError
from healthpredict.loop.models import ModelSlot
from healthpredict.monitoring import outcomes as outcome_store
from healthpredict.monitoring.quality import record_violations
from healthpredict.monitoring.store import RejectedRequest
from healthpredict.serving.fastpath import records_frame
from healthpredict.serving.schemas import DISCHARGE_TIME
from healthpredict.settings import Settings

_FIELD = re.compile(r"^encounters\[(\d+)\]\.(.+)$")
TIMEOUT_SECONDS = 120.0


@dataclass
class Served:
    """What sending one batch did."""

    accepted: int = 0
    rejected: list[tuple[int, list[str]]] = field(default_factory=list)
    requests: int = 0
    seconds: float = 0.0


class Traffic(Protocol):
    """A destination for a replay's requests and outcomes."""

    def serve(self, records: Sequence[dict[str, Any]], chunk: int) -> Served:
        """Send prediction requests in chunks; return what was accepted and refused."""
        ...

    def send_outcomes(self, records: Sequence[dict[str, Any]], chunk: int) -> int:
        """Send outcomes in chunks; return how many were new."""
        ...

    def follow_champion(self, version: str) -> None:
        """Make sure the next request is answered by ``version``."""
        ...


class HttpTraffic:
    """The real service, over HTTP with its API key."""

    def __init__(self, url: str, api_key: str, admin_key: str | None = None):
        """Talk to the service at ``url``."""
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["X-API-Key"] = api_key
        self.admin_key = admin_key

    def serve(self, records: Sequence[dict[str, Any]], chunk: int) -> Served:
        """POST ``/predict/batch`` per chunk; refused records are set aside, the rest resent."""
        served, started = Served(), time.perf_counter()
        for start in range(0, len(records), chunk):
            positions = list(range(start, min(start + chunk, len(records))))
            self._serve_chunk(records, positions, served)
        served.seconds = time.perf_counter() - started
        return served

    def _serve_chunk(
        self, records: Sequence[dict[str, Any]], positions: list[int], served: Served
    ) -> None:
        while positions:
            answer = self._post(
                "/predict/batch?explanation=none", {"encounters": [records[p] for p in positions]}
            )
            served.requests += 1
            if answer.status_code == 200:
                served.accepted += len(positions)
                return
            refused = _refused_fields(answer)
            if answer.status_code != 422 or not refused:
                raise LoopError(f"the service answered {answer.status_code}: {answer.text[:300]}")
            served.rejected.extend((positions[i], fields) for i, fields in sorted(refused.items()))
            positions = [p for i, p in enumerate(positions) if i not in refused]

    def send_outcomes(self, records: Sequence[dict[str, Any]], chunk: int) -> int:
        """POST ``/outcomes`` per chunk."""
        recorded = 0
        for start in range(0, len(records), chunk):
            answer = self._post("/outcomes", {"outcomes": list(records[start : start + chunk])})
            if answer.status_code != 200:
                raise LoopError(f"/outcomes answered {answer.status_code}: {answer.text[:300]}")
            recorded += int(answer.json()["recorded"])
        return recorded

    def serving(self) -> str | None:
        """The version the service answers with now."""
        answer = self.session.get(f"{self.url}/model", timeout=TIMEOUT_SECONDS)
        answer.raise_for_status()
        return answer.json().get("version")

    def follow_champion(self, version: str) -> None:
        """Ask the service to check the alias now, and wait until it serves ``version``."""
        deadline = time.monotonic() + TIMEOUT_SECONDS
        while self.serving() != version:
            if time.monotonic() > deadline:
                raise LoopError(
                    f"the service did not swap to v{version} within {TIMEOUT_SECONDS:.0f} s"
                )
            if self.admin_key:
                self.session.post(
                    f"{self.url}/admin/reload",
                    headers={"X-Admin-Key": self.admin_key},
                    timeout=TIMEOUT_SECONDS,
                )
            else:
                time.sleep(1.0)  # the service's own poll picks the alias up

    def _post(self, path: str, body: dict[str, Any]) -> requests.Response:
        try:
            return self.session.post(f"{self.url}{path}", json=body, timeout=TIMEOUT_SECONDS)
        except requests.RequestException as error:
            raise LoopError(f"the service at {self.url} cannot be reached: {error}") from error


def _refused_fields(answer: requests.Response) -> dict[int, list[str]]:
    """``{position in the request: [fields]}`` from a 422's named errors."""
    refused: dict[int, list[str]] = {}
    try:
        errors = answer.json().get("errors", [])
    except ValueError:
        return refused
    for error in errors:
        match = _FIELD.match(str(error.get("field", "")))
        if match:
            fields = refused.setdefault(int(match.group(1)), [])
            if match.group(2) not in fields:
                fields.append(match.group(2))
    return refused


class InProcessTraffic:
    """The service's scoring and validation, in this process, writing the same rows."""

    def __init__(
        self, settings: Settings, engine: Engine, deployment: str, slot: ModelSlot, salt: bytes
    ):
        """Score with ``slot``'s champion into ``deployment``'s log."""
        monitoring = settings.monitoring.model_copy(update={"deployment": deployment})
        self.settings = settings.model_copy(update={"monitoring": monitoring})
        self.engine, self.slot, self.salt = engine, slot, salt
        self._counter = 0

    def serve(self, records: Sequence[dict[str, Any]], chunk: int) -> Served:
        """Validate, score and log every record (one chunk per request id)."""
        from healthpredict.monitoring.tables import create_schema
        from healthpredict.serving.scoring import predict_records

        served, started = Served(), time.perf_counter()
        create_schema(self.engine)
        model = self.slot.load(self.slot.champion_version())
        for start in range(0, len(records), chunk):
            part = [_typed(r) for r in records[start : start + chunk]]
            refused = record_violations(records_frame(part))
            request_id = self._request_id()
            good = [r for i, r in enumerate(part) if i not in refused]
            entries: list[Any] = []
            if good:
                entries.append(
                    predict_records(model, good, self.settings, self.salt, request_id, "none").log
                )
            if refused:
                entries.append(self._rejected(request_id, part, refused))
                served.rejected.extend((start + i, f) for i, f in sorted(refused.items()))
            self._write(entries)
            served.accepted += len(good)
            served.requests += 1
        served.seconds = time.perf_counter() - started
        return served

    def send_outcomes(self, records: Sequence[dict[str, Any]], chunk: int) -> int:
        """Record outcomes as ``POST /outcomes`` does."""
        parsed = outcome_store.parse_records(records)
        report = outcome_store.record(
            self.engine, self.settings.monitoring.deployment, parsed, self.salt, "replay"
        )
        return report.recorded

    def follow_champion(self, version: str) -> None:
        """Nothing to do: each batch loads the slot's champion."""

    def _request_id(self) -> str:
        self._counter += 1
        return f"replay-{self._counter:06d}"

    def _rejected(
        self, request_id: str, part: list[dict[str, Any]], refused: dict[int, list[str]]
    ) -> RejectedRequest:
        now = datetime.now(UTC)
        positions = sorted(refused)
        return RejectedRequest(
            request_id,
            now,
            self.settings.monitoring.deployment,
            positions,
            [refused[p] for p in positions],
            [part[p].get(DISCHARGE_TIME) or now for p in positions],
        )

    def _write(self, entries: list[Any]) -> None:
        with self.engine.begin() as connection:
            for entry in entries:
                connection.execute(insert(entry.table), entry.rows())


def _typed(record: dict[str, Any]) -> dict[str, Any]:
    """A replay record with its discharge time as the service parses it (an aware datetime)."""
    moment = record.get(DISCHARGE_TIME)
    if isinstance(moment, str):
        record = {**record, DISCHARGE_TIME: datetime.fromisoformat(moment).astimezone(UTC)}
    return record
