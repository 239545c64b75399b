"""A simulation step between its phases: the pending record in the run folder.

A step runs in phases (score, monitor, decide, retrain, gate, commit; see
:mod:`healthpredict.pipelines.simulate`). Each phase reads the step's :class:`PendingStep`,
adds what it found and writes it back, so the phases can run as separate tasks, in separate
processes, and each can be retried: a phase that finds its own result already in the record
returns it instead of doing the work again. Only the commit writes to the store, in one
transaction, from the record; the record then stays behind, marked committed, so running a
committed step again changes nothing.

On disk a record is ``pending/batch_NNN.json`` (everything but the prediction log rows) plus
``pending/batch_NNN_predictions.parquet`` (those rows, written once by the score phase and
deleted by the commit). Both are written through a temporary name: a killed phase never
leaves a truncated record.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from healthpredict.data.timeline import batch_name
from healthpredict.pipelines.simulation_rows import StepRows, write_parquet

Phase = Literal["scored", "monitored", "decided", "retrained", "gated", "committed"]
PHASES: tuple[Phase, ...] = ("scored", "monitored", "decided", "retrained", "gated", "committed")
_DATETIME = "$datetime"


@dataclass
class PendingStep:
    """What one step has found so far, phase by phase.

    Attributes:
        step: The batch (1-based) this step handles.
        phase: The last phase completed.
        champion: Version serving when the step started; it scores the batch.
        last_promotion_step: Step of the last promotion before this one (the policy's cooldown).
        rows: The store rows the commit writes.
        text: One line of progress, grown by each phase.
        labelled: Batch whose labels this step used (None: no usable labels yet).
        action: The policy's decision: "none", "retrain" or "cooldown".
        reasons: Why the policy decided so.
        challenger: Version trained at this step (or found, after a retry).
        outcome: "", "promoted" (the loop moved the alias), "passed" (the gate passed it and
            a delivery pipeline moves the alias), "refused" or "failed".
        gate: The gate's whole decision, as plain data.
        error: What went wrong when the outcome is "failed".
        champion_after: Version serving once the step is committed.
        confirms: An earlier step whose "passed" challenger is serving now: the commit turns
            that step's outcome into "promoted".
        adopted: The champion changed outside the loop since the last committed step.
    """

    step: int
    phase: Phase
    champion: str
    last_promotion_step: int | None
    rows: StepRows
    text: str = ""
    labelled: int | None = None
    action: str = "none"
    reasons: list[str] = field(default_factory=list)
    challenger: str | None = None
    outcome: str = ""
    gate: dict[str, Any] | None = None
    error: str | None = None
    champion_after: str = ""
    confirms: int | None = None
    adopted: bool = False

    def reached(self, phase: Phase) -> bool:
        """Whether ``phase`` (or a later one) is done."""
        return PHASES.index(self.phase) >= PHASES.index(phase)

    @property
    def scored(self) -> bool:
        """Whether the batch was scored (False: quarantined whole)."""
        return self.rows.batch.get("status") != "quarantined"

    def summary(self) -> dict[str, Any]:
        """Small JSON-safe description (what an orchestrator passes between tasks)."""
        return {
            "step": self.step,
            "phase": self.phase,
            "status": self.rows.batch.get("status"),
            "champion": self.champion,
            "action": self.action,
            "challenger": self.challenger,
            "outcome": self.outcome,
            "champion_after": self.champion_after or self.champion,
            "error": self.error,
            "text": self.text,
        }


def pending_paths(folder: Path, step: int) -> tuple[Path, Path]:
    """The record's JSON file and its predictions file, in the run folder ``folder``."""
    base = folder / "pending" / batch_name(step)
    return base.with_suffix(".json"), base.with_name(base.name + "_predictions.parquet")


def save_pending(folder: Path, pending: PendingStep, predictions: bool) -> None:
    """Write the record; the prediction rows too when ``predictions`` (they never change)."""
    record, rows_path = pending_paths(folder, pending.step)
    # Shallow on purpose: asdict() would deep-copy thousands of prediction rows.
    data = {f.name: getattr(pending, f.name) for f in fields(pending)}
    data["rows"] = {f.name: getattr(pending.rows, f.name) for f in fields(StepRows)}
    del data["rows"]["predictions"]
    if predictions:
        write_parquet(_predictions_frame(pending.rows.predictions), rows_path)
    _atomic_text(record, json.dumps(data, default=_encode, indent=1))


def load_pending(folder: Path, step: int) -> PendingStep | None:
    """The step's record, or None when no phase of it has run."""
    record, rows_path = pending_paths(folder, step)
    if not record.is_file():
        return None
    data = json.loads(record.read_text(), object_hook=_decode)
    predictions = _prediction_rows(rows_path) if data["phase"] != "committed" else []
    data["rows"] = StepRows(**data["rows"], predictions=predictions)
    return PendingStep(**data)


def drop_predictions(folder: Path, step: int) -> None:
    """Delete the prediction rows once the store holds them."""
    pending_paths(folder, step)[1].unlink(missing_ok=True)


def _predictions_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    # The request fields as JSON text: one column, whatever their types.
    return pd.DataFrame(
        [{**row, "features": json.dumps(row["features"], default=_encode)} for row in rows],
        columns=list(rows[0]) if rows else ["features"],
    )


def _prediction_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: score the step again")
    rows: list[dict[str, Any]] = pd.read_parquet(path).to_dict("records")  # type: ignore[assignment]
    for row in rows:
        row["features"] = json.loads(row["features"], object_hook=_decode)
        row["created_at"] = pd.Timestamp(row["created_at"]).to_pydatetime()
    return rows


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return {_DATETIME: value.isoformat()}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot keep {type(value).__name__} in a pending record")


def _decode(value: dict[str, Any]) -> Any:
    if len(value) == 1 and _DATETIME in value:
        return datetime.fromisoformat(value[_DATETIME])
    return value


def _atomic_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)
