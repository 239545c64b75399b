"""Patient groups to report on (age band, gender, race...), with small groups pooled.

A figure about a group of 30 encounters is noise, so a group counts only when it has at least
``min_encounters`` encounters and at least ``min_positives`` readmissions *and* as many
encounters without one (an AUC needs both). A group short of that is pooled:

- **ordered attributes** (the age bands) with their neighbours: bands are merged in order until
  the run is large enough (``[0-10)`` .. ``[30-40)`` become ``[0-40)``), and a short run left at
  the top joins the last one (``[80-90)`` + ``[90-100)`` = ``[80-100)``), so a pooled band is
  still a band;
- **other attributes** into one ``other (...)`` group naming its members.

What is still too small after pooling is kept, marked ``enough=False`` ("too few to tell"): it
is reported with its counts and never raises an alarm or blocks a promotion. Pooling follows
each window's own counts, so a band may be pooled in one window and not in the next.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from healthpredict.data.schema import AGE_BANDS, column_specs
from healthpredict.errors import HealthPredictError

MISSING = "missing"
# Attributes whose values have an order, so that a small group is pooled with its neighbours.
ORDERED_VALUES: dict[str, tuple[str, ...]] = {"age": AGE_BANDS}
_BAND = re.compile(r"^\[(\d+)-(\d+)\)$")


class GroupAttributeError(HealthPredictError, ValueError):
    """A configured group attribute is not a contract column with a fixed set of values."""


def groupable_attributes() -> tuple[str, ...]:
    """Contract columns a group can be formed on: those with a fixed list of values."""
    return tuple(spec.name for spec in column_specs(with_label=False) if spec.allowed is not None)


def check_attributes(attributes: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``attributes`` if each is groupable and none repeats.

    Raises:
        GroupAttributeError: An attribute is unknown, free text or a count, or repeats.
    """
    allowed = groupable_attributes()
    for name in attributes:
        if name not in allowed:
            raise GroupAttributeError(
                f"group attribute {name!r} is not a contract column with a fixed set of values; "
                f"choose from: {', '.join(allowed)}"
            )
    if len(set(attributes)) != len(attributes):
        raise GroupAttributeError(f"group attributes repeat: {', '.join(attributes)}")
    return tuple(attributes)


@dataclass(frozen=True)
class Group:
    """One reported group: its rows, its name, the values it pools and whether it is enough."""

    attribute: str
    name: str
    members: tuple[str, ...]
    mask: np.ndarray
    enough: bool


def attribute_values(frame: pd.DataFrame, attribute: str) -> np.ndarray:
    """The attribute as text, a missing value being a value of its own."""
    column = frame[attribute].astype(object)
    return column.where(column.notna(), MISSING).astype(str).to_numpy()


def pool_groups(
    values: np.ndarray,
    labels: np.ndarray,
    attribute: str,
    min_encounters: int,
    min_positives: int,
) -> list[Group]:
    """The groups of one attribute, small ones pooled (see the module docstring)."""
    values = np.asarray(values, dtype=object)
    y = np.asarray(labels, dtype=float)
    present = sorted(set(values.tolist()))
    order = ORDERED_VALUES.get(attribute, ())
    ordered = [v for v in order if v in present]

    def enough(members: list[str]) -> bool:
        mask = np.isin(values, members)
        positives = y[mask].sum()
        return bool(
            mask.sum() >= min_encounters
            and positives >= min_positives
            and mask.sum() - positives >= min_positives
        )

    runs = _ordered_runs(ordered, enough) if ordered else []
    unordered = [v for v in present if v not in ordered]
    kept = [[v] for v in unordered if enough([v])]
    small = [v for v in unordered if not enough([v])]
    if small:
        kept.append(small)
    groups = []
    for members in runs + kept:
        name = _pooled_name(attribute, members, ordered_run=members[0] in ordered)
        groups.append(
            Group(attribute, name, tuple(members), np.isin(values, members), enough(members))
        )
    return groups


def _ordered_runs(ordered: list[str], enough: Callable[[list[str]], bool]) -> list[list[str]]:
    """Neighbouring values merged until each run is enough; a short last run joins the one
    before it."""
    runs: list[list[str]] = []
    current: list[str] = []
    for value in ordered:
        current.append(value)
        if enough(current):
            runs.append(current)
            current = []
    if current:
        if runs:
            runs[-1] = runs[-1] + current
        else:
            runs.append(current)
    return runs


def _pooled_name(attribute: str, members: list[str], ordered_run: bool) -> str:
    if len(members) == 1:
        return members[0]
    bands = [_BAND.match(m) for m in members]
    if ordered_run and all(bands):
        return f"[{bands[0].group(1)}-{bands[-1].group(2)})"  # type: ignore[union-attr]
    if ordered_run:
        return f"{members[0]} to {members[-1]}"
    return f"other ({', '.join(members)})"
