"""A persistent shift is one event, then the field's new state; an acknowledgement is shown."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from healthpredict.monitoring.drift import DriftMonitor, DriftResult
from healthpredict.monitoring.field_state import (
    MOVE_MARGIN,
    Acknowledgement,
    FieldState,
    FieldStatus,
    PreviousField,
    field_states,
    verdicts,
)
from tests.monitoring.conftest import prepared_frame

WEIGHTS = pd.Series({"num_lab_procedures": 0.6, "age": 0.4})


@pytest.fixture(scope="module")
def frames() -> list[pd.DataFrame]:
    pool = prepared_frame(9000, seed=21)
    return [pool.iloc[i * 1500 : (i + 1) * 1500].reset_index(drop=True) for i in range(5)]


@pytest.fixture(scope="module")
def monitor(frames: list[pd.DataFrame]) -> DriftMonitor:
    return DriftMonitor(frames[0], np.full(100, 0.1), WEIGHTS, 0.05, 0.1)


def run(monitor: DriftMonitor, batch: pd.DataFrame) -> DriftResult:
    return monitor.run(batch, np.full(len(batch), 0.1))


def remember(result: DriftResult, states: dict[str, FieldState], window: int) -> dict:
    return {
        f.feature: PreviousField(
            window, states[f.feature].status, states[f.feature].since_window, f.counts
        )
        for f in result.features
    }


def shifted(batch: pd.DataFrame, days: int) -> pd.DataFrame:
    return batch.assign(num_lab_procedures=lambda f: (f["num_lab_procedures"] + days).clip(0, 300))


def test_a_shift_that_stays_is_reported_once(
    monitor: DriftMonitor, frames: list[pd.DataFrame]
) -> None:
    sequence = [frames[1], shifted(frames[2], 10), shifted(frames[3], 10), shifted(frames[4], 25)]
    previous: dict = {}
    seen = []
    for window, batch in enumerate(sequence, start=1):
        result = run(monitor, batch)
        states = field_states(result, window, previous, {})
        seen.append((states["num_lab_procedures"], verdicts(result, states, previous, 0.5)))
        previous = remember(result, states, window)
    statuses = [state.status for state, _ in seen]
    assert statuses == [
        FieldStatus.STEADY,
        FieldStatus.MOVED,
        FieldStatus.SETTLED,
        FieldStatus.MOVED_AGAIN,
    ]
    assert seen[2][0].since_window == 2  # settled: its new state since the move
    assert seen[2][0].previous_statistic is not None
    assert seen[2][0].previous_statistic <= MOVE_MARGIN * (seen[2][0].previous_threshold or 0)
    changed = [verdict.data_changed for _, verdict in seen]
    assert changed == [False, True, False, True]
    assert seen[1][1].input_drift and seen[1][1].moved == ("num_lab_procedures",)
    assert not seen[2][1].input_drift  # still off the reference, but nothing moved


def test_a_field_back_at_the_reference_has_returned(
    monitor: DriftMonitor, frames: list[pd.DataFrame]
) -> None:
    moved = run(monitor, shifted(frames[2], 10))
    states = field_states(moved, 1, {}, {})
    back = field_states(run(monitor, frames[3]), 2, remember(moved, states, 1), {})
    assert back["num_lab_procedures"].status is FieldStatus.RETURNED


def test_an_acknowledged_state_is_shown_with_who_and_why(
    monitor: DriftMonitor, frames: list[pd.DataFrame]
) -> None:
    first = run(monitor, shifted(frames[2], 10))
    states = field_states(first, 5, {}, {})
    note = Acknowledgement(
        "num_lab_procedures", "1", 5, "ana", "new lab panel", datetime(2026, 1, 5, tzinfo=UTC)
    )
    later = field_states(
        run(monitor, shifted(frames[3], 10)), 6, remember(first, states, 5), {note.feature: note}
    )
    state = later["num_lab_procedures"]
    assert state.status is FieldStatus.ACKNOWLEDGED and state.acknowledgement == note
    assert "ana" in note.describe() and "new lab panel" in note.describe()
