"""The equity part of the monitor phase: per patient group, once a window's outcomes arrive.

Called for every (window, version) whose realised performance the monitor measures
(:func:`healthpredict.loop.monitor.realised_rows`): the group attributes of those encounters are
read from the log (only the few JSON fields named, not the whole record), the figures and
alarms come from :mod:`healthpredict.monitoring.equity`, and the rows go to ``window_groups``
with the window's commit. The alarms join the performance row's label alarms (signal
``equity``), so the policy and the per-window findings see them like any other.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy import Connection, and_, delete, insert, select

from healthpredict.data.prepare import TARGET
from healthpredict.data.pseudonym import ENCOUNTER_KEY
from healthpredict.loop.context import LoopContext
from healthpredict.loop.pending import WindowRows, jsonable
from healthpredict.loop.windows import PROBABILITY
from healthpredict.monitoring.equity import EquityReport, EquityRules, GroupFigures, measure_equity
from healthpredict.monitoring.tables import predictions, window_groups
from healthpredict.settings import MonitoringSettings, TrainingSettings

_GROUPS, _SECONDS = "equity_groups", "equity_seconds"  # carried on a performance row until split


def equity_rules(
    monitoring: MonitoringSettings, training: TrainingSettings, decision_threshold: float
) -> EquityRules:
    """The groups, sizes and margins in force; a group's flagged share is counted at the
    service's ``decision_threshold``, its intervals drawn like the training evaluation's."""
    return EquityRules(
        attributes=tuple(monitoring.equity_attributes),
        min_encounters=monitoring.equity_min_group_encounters,
        min_positives=monitoring.equity_min_group_positives,
        auc_margin=monitoring.equity_auc_margin,
        calibration_margin=monitoring.equity_calibration_margin,
        decision_threshold=decision_threshold,
        rounds=max(training.bootstrap_rounds, 200),
        confidence_level=training.confidence_level,
        seed=training.seed,
    )


def attach_equity(
    context: LoopContext, row: dict[str, Any], frame: pd.DataFrame, groups: pd.Series
) -> None:
    """Measure the groups of one performance row's encounters (``frame``, labelled, with
    ``groups`` the patient of each) and attach their rows and alarms to ``row``."""
    started = time.perf_counter()
    settings = context.settings
    rules = equity_rules(
        settings.monitoring, settings.training, settings.serving.decision_threshold
    )
    window = context.clock.window(row["window"])
    attributes = _group_attributes(context, window.start, window.end, rules.attributes)
    aligned = frame[[ENCOUNTER_KEY]].merge(attributes, on=ENCOUNTER_KEY, how="left")
    report = measure_equity(
        frame[TARGET].to_numpy(),
        frame[PROBABILITY].to_numpy(dtype=float),
        groups,
        aligned,
        rules,
    )
    row["alarms"] = list(row["alarms"]) + report.alarms
    row[_GROUPS] = group_rows(report, row)
    row[_SECONDS] = time.perf_counter() - started


@dataclass(frozen=True)
class EquityRun:
    """What the equity part of one monitor run found: rows to write, alarms, its time."""

    rows: list[dict[str, Any]]
    alarms: list[str]
    seconds: float

    @property
    def text(self) -> str:
        """For the window's line of findings: every group alarm, named."""
        return "".join(f"; {alarm}" for alarm in self.alarms)


def split_equity(window_rows: WindowRows) -> EquityRun:
    """Move the group rows off the performance rows into ``window_rows.groups`` (their own
    table), with the time they took."""
    rows: list[dict[str, Any]] = []
    seconds = 0.0
    for row in window_rows.performance:
        rows.extend(row.pop(_GROUPS, []))
        seconds += row.pop(_SECONDS, 0.0)
    window_rows.groups = rows
    alarms = [alarm for group in rows for alarm in group["alarms"]]
    return EquityRun(rows, alarms, seconds)


def group_rows(report: EquityReport, performance: dict[str, Any]) -> list[dict[str, Any]]:
    """``window_groups`` rows of one window and version: the population, then each group."""
    key = {
        "deployment": performance["deployment"],
        "window": performance["window"],
        "model_version": performance["model_version"],
        "known_at_window": performance["known_at_window"],
    }
    return [jsonable({**key, **_figures_row(g)}) for g in [report.overall, *report.groups]]


def _figures_row(group: GroupFigures) -> dict[str, Any]:
    row: dict[str, Any] = {
        "attribute": group.attribute,
        "group_name": group.group,
        "members": list(group.members),
        "status": group.status,
        "n_encounters": group.n_encounters,
        "n_patients": group.n_patients,
        "n_positive": group.n_positive,
        "observed_rate": group.observed_rate,
        "predicted_rate": group.predicted_rate,
        "alarms": list(group.alarms),
    }
    for name in ("roc_auc", "auc_vs_all", "calibration_gap", "gap_vs_all", "flagged_share"):
        interval = getattr(group, name)
        row[name], row[f"{name}_low"], row[f"{name}_high"] = (
            interval.estimate,
            interval.low,
            interval.high,
        )
    return row


def replace_groups(
    connection: Connection, deployment: str, measured: list[int], rows: list[dict[str, Any]]
) -> None:
    """Write the group rows of the windows measured in this run (replacing earlier ones)."""
    table = window_groups
    for number in set(measured):
        connection.execute(
            delete(table).where(table.c.deployment == deployment, table.c.window == number)
        )
    if rows:
        connection.execute(insert(table), rows)


def _group_attributes(
    context: LoopContext, start: Any, end: Any, attributes: tuple[str, ...]
) -> pd.DataFrame:
    """The group attributes of the window's logged predictions, by encounter (the latest
    prediction of an encounter scored twice, as :func:`healthpredict.loop.windows.labelled`
    keeps it)."""
    log = predictions
    fields = [log.c.features[name].as_string().label(name) for name in attributes]
    query = (
        select(log.c.encounter_key, *fields)
        .where(
            and_(
                log.c.deployment == context.deployment,
                log.c.occurred_at >= start,
                log.c.occurred_at < end,
            )
        )
        .order_by(log.c.occurred_at, log.c.id)
    )
    with context.engine.connect() as connection:
        frame = pd.DataFrame(connection.execute(query).all(), columns=[ENCOUNTER_KEY, *attributes])
    return frame.drop_duplicates(ENCOUNTER_KEY, keep="last")
