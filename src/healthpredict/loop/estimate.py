"""The label-free performance estimate of a window, recalibrated on outcomes already known.

See :mod:`healthpredict.monitoring.performance` for why: the newest earlier window served by
the same version whose outcomes were measured (and numerous enough) supplies the logistic
recalibration; before any, the estimate is the model's probabilities as served.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select

from healthpredict.loop.context import LoopContext
from healthpredict.monitoring.performance import Recalibration, estimated_auc
from healthpredict.monitoring.tables import window_performance, window_versions


@dataclass(frozen=True)
class Estimate:
    """A window's estimate: recalibrated (``value``), as served (``raw``), and on what basis."""

    value: float
    raw: float
    basis: str


def label_free_estimate(
    context: LoopContext,
    version: str,
    window: int,
    probabilities: np.ndarray,
    measured: list[dict[str, Any]],
) -> Estimate:
    """The estimate of ``window``'s AUC under ``version`` from outcomes known now: those in
    the store and those ``measured`` by this run (performance rows, not committed yet)."""
    raw = estimated_auc(probabilities)
    found = _newest_recalibration(context, version, window)
    for row in measured:
        newer = found is None or row["window"] > found[1]
        if row["model_version"] == version and row["recalibration"] and newer:
            found = Recalibration(**row["recalibration"]), int(row["window"])
    if found is None:
        return Estimate(raw, raw, "as served (no outcomes of this version yet)")
    recalibration, source = found
    value = estimated_auc(probabilities, recalibration)
    return Estimate(value, raw, f"recalibrated on the outcomes of w{source:03d}")


def _newest_recalibration(
    context: LoopContext, version: str, window: int
) -> tuple[Recalibration, int] | None:
    table = window_performance
    query = (
        select(table.c.window, table.c.recalibration)
        .where(
            table.c.deployment == context.deployment,
            table.c.model_version == version,
            table.c.window < window,
            table.c.recalibration.is_not(None),
        )
        .order_by(table.c.window.desc(), table.c.known_at_window.desc())
        .limit(1)
    )
    with context.engine.connect() as connection:
        row = connection.execute(query).first()
    if row is None or row[1] is None:  # a JSON null reads back as None too
        return None
    return Recalibration(**row[1]), int(row[0])


def monitored_estimates(
    context: LoopContext, numbers: list[int], current: list[dict[str, Any]]
) -> dict[tuple[int, str], float]:
    """The estimate each of ``numbers`` got when it was monitored, by (window, version);
    ``current`` holds the rows of the window being monitored (not committed yet)."""
    table = window_versions
    query = select(table.c.window, table.c.model_version, table.c.estimated_auc).where(
        table.c.deployment == context.deployment, table.c.window.in_(numbers)
    )
    with context.engine.connect() as connection:
        found = {(int(n), str(v)): float(e) for n, v, e in connection.execute(query)}
    for row in current:
        found[(int(row["window"]), str(row["model_version"]))] = float(row["estimated_auc"])
    return found
