"""What a field's drift means over windows: a move is one event, and then the field's new state.

Each window, a field that is off the model's reference is also compared with the previous window
served by the same version. The status says what happened:

- ``steady``: matches the reference;
- ``moved``: it left the reference in this window (an event: the alarm);
- ``settled``: off the reference as it already was, like the previous window (no alarm: its
  new state, reported with the window it moved in);
- ``moved_again``: off the reference and moved from the previous window too, by more than
  :data:`MOVE_MARGIN` times the comparison's calibrated threshold (an event; the margin makes
  it a change worth a person's attention, not the slow drift of a field already known to be
  moving: on this extract consecutive windows are more than a year apart, and a field whose
  coding is changing changes a little in every one);
- ``acknowledged``: settled, and a person said why (``healthpredict drift acknowledge``);
- ``returned``: back to the reference after being off it.

A promotion changes the version, and with it the reference: every field starts again from
``steady``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import numpy as np
import pandas as pd

from healthpredict.monitoring.drift import DriftResult, FieldDrift
from healthpredict.monitoring.fields import (
    NUMERICAL,
    ReferenceField,
    Statistic,
    WatchedField,
    jensen_shannon,
    wasserstein,
)


class FieldStatus(StrEnum):
    """A field's state in a window (see the module docstring)."""

    STEADY = "steady"
    MOVED = "moved"
    SETTLED = "settled"
    MOVED_AGAIN = "moved_again"
    ACKNOWLEDGED = "acknowledged"
    RETURNED = "returned"


MOVE_MARGIN = 2.0
EVENTS = frozenset({FieldStatus.MOVED, FieldStatus.MOVED_AGAIN})
OFF_REFERENCE = frozenset(
    {FieldStatus.MOVED, FieldStatus.SETTLED, FieldStatus.MOVED_AGAIN, FieldStatus.ACKNOWLEDGED}
)


@dataclass(frozen=True)
class PreviousField:
    """A field as recorded in the previous window the same version served."""

    window: int
    status: FieldStatus
    since_window: int | None
    counts: dict[str, int]


@dataclass(frozen=True)
class Acknowledgement:
    """A person's word that a field's new state is known and why."""

    feature: str
    model_version: str
    since_window: int
    by: str
    reason: str
    at: datetime

    def describe(self) -> str:
        """One line for tables."""
        return f"acknowledged by {self.by} on {self.at:%Y-%m-%d}: {self.reason}"


@dataclass(frozen=True)
class FieldState:
    """A field's status in this window and how it was decided.

    Attributes:
        status: See :class:`FieldStatus`.
        since_window: The window it moved in (None while steady).
        previous_statistic: Its statistic against the previous window (None if not compared).
        previous_threshold: The calibrated threshold of that comparison.
        acknowledgement: Who acknowledged its state, if anybody did.
    """

    status: FieldStatus
    since_window: int | None
    previous_statistic: float | None = None
    previous_threshold: float | None = None
    acknowledgement: Acknowledgement | None = None


def field_states(
    drift: DriftResult,
    window: int,
    previous: dict[str, PreviousField],
    acknowledgements: dict[str, Acknowledgement],
    seed: int = 0,
) -> dict[str, FieldState]:
    """The state of every field of ``drift`` (window ``window``), given the previous window's."""
    rng = np.random.default_rng([seed, window])
    states = {}
    for field in drift.features:
        before = previous.get(field.feature)
        was_off = before is not None and before.status in OFF_REFERENCE
        if not field.drifted:
            status = FieldStatus.RETURNED if was_off else FieldStatus.STEADY
            states[field.feature] = FieldState(status, None)
        elif not was_off or before is None:
            states[field.feature] = FieldState(FieldStatus.MOVED, window)
        else:
            states[field.feature] = _still_off(
                field, before, acknowledgements.get(field.feature), window, drift, rng
            )
    return states


def _still_off(
    field: FieldDrift,
    before: PreviousField,
    acknowledgement: Acknowledgement | None,
    window: int,
    drift: DriftResult,
    rng: np.random.Generator,
) -> FieldState:
    """A field off the reference now and in the previous window: moved again, or settled."""
    statistic, threshold = compare_with_previous(field, before.counts, drift.calibration.share, rng)
    if statistic > MOVE_MARGIN * threshold:
        return FieldState(FieldStatus.MOVED_AGAIN, window, statistic, threshold)
    since = before.since_window if before.since_window is not None else before.window
    if acknowledgement is not None and acknowledgement.since_window == since:
        return FieldState(FieldStatus.ACKNOWLEDGED, since, statistic, threshold, acknowledgement)
    return FieldState(FieldStatus.SETTLED, since, statistic, threshold)


def compare_with_previous(
    field: FieldDrift, previous_counts: dict[str, int], share: float, rng: np.random.Generator
) -> tuple[float, float]:
    """The field's statistic against the previous window's values, and its threshold at the
    per-check ``share`` (calibrated as against the reference, the previous window standing in
    for it)."""
    numerical = field.feature in NUMERICAL
    keys = sorted(set(previous_counts) | set(field.counts), key=float if numerical else str)
    before = np.array([previous_counts.get(k, 0) for k in keys], dtype=float)
    now = np.array([field.counts.get(k, 0) for k in keys], dtype=float)
    statistic_kind = Statistic(field.method)
    if statistic_kind is Statistic.WASSERSTEIN:
        values = np.array([float(k) for k in keys])
        statistic = float(wasserstein(values, before, now))
    else:
        statistic = float(jensen_shannon(before, now))
    index = pd.Index([float(k) for k in keys]) if numerical else pd.Index(keys)
    stand_in = ReferenceField(
        WatchedField(field.feature, statistic_kind, nullable=False, written=False),
        pd.Series(before, index=index)[before > 0],
        pd.Series(dtype=int),
    )
    return statistic, stand_in.statistic_threshold(int(now.sum()), share, rng)


@dataclass(frozen=True)
class Verdicts:
    """The two answers of a window.

    Attributes:
        data_changed: Did the data change? A field (any, used by the model or not) moved
            in this window.
        input_drift: Did the model's inputs change enough to matter? The fields that moved in
            this window carry the configured share of the model's split gain, or the fields off
            the reference (not acknowledged) reached that share in this window.
        moved: The fields that moved in this window, most severe first.
        weighted_share: The share of split gain in fields off the reference (not acknowledged).
    """

    data_changed: bool
    input_drift: bool
    moved: tuple[str, ...]
    weighted_share: float


_COUNTED = frozenset({FieldStatus.MOVED, FieldStatus.MOVED_AGAIN, FieldStatus.SETTLED})


def verdicts(
    drift: DriftResult,
    states: dict[str, FieldState],
    previous: dict[str, PreviousField],
    share_alarm: float,
) -> Verdicts:
    """Both verdicts of a window from its fields, their states and the previous window's."""
    weights = {f.feature: f.weight for f in drift.features}
    moved = tuple(f.feature for f in drift.drifted if states[f.feature].status in EVENTS)
    share = sum(w for name, w in weights.items() if states[name].status in _COUNTED)
    before = sum(
        weights.get(name, 0.0) for name, field in previous.items() if field.status in _COUNTED
    )
    moved_share = sum(weights[name] for name in moved)
    reached = share >= share_alarm > before and moved_share > 0
    return Verdicts(
        data_changed=bool(moved),
        input_drift=moved_share >= share_alarm or reached,
        moved=moved,
        weighted_share=float(share),
    )
