"""Equity over time: how the model serves each patient group, once a window's outcomes arrive.

Per group of each configured attribute (default: age band, gender, race; small groups pooled,
see :mod:`healthpredict.modeling.groups`):

- **realised ROC-AUC** within the group, and its difference from the whole population's;
- **calibration gap**: observed minus mean predicted readmission rate in the group, and its
  difference from the whole population's gap (a model that is off for everyone raises the
  population's calibration alarm; this asks whether a group is off *beyond* that);
- **flagged share**: the share of the group's encounters the service flagged, i.e. predicted
  at or above ``decision_threshold`` (what ``predictions.decision`` records), to set against
  the group's observed rate.

Each figure has a patient-grouped bootstrap interval: one ``rows x rounds`` matrix of patient
draws serves every group and the population, so each group's difference from the population
is paired round by round. The AUC of every round comes from one sort and cumulative sums
(:func:`healthpredict.modeling.bootstrap.roc_auc_rounds`), not from a call per round.

**The alarm** (signal ``equity``): a group's AUC is surely (the whole interval of its
difference) more than ``auc_margin`` below the population's, or its calibration gap differs
from the population's by surely more than ``calibration_margin``. A group too few to tell
never alarms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine, select

from healthpredict.modeling.bootstrap import (
    Interval,
    patient_bootstrap_matrix,
    percentile_interval,
    roc_auc_rounds,
)
from healthpredict.modeling.groups import Group, attribute_values, check_attributes, pool_groups
from healthpredict.monitoring.tables import window_groups

ALL = ("all", "all")
OK, ALARM, TOO_FEW = "ok", "alarm", "too few"
# How an alarm names the figure it is about ("equity: age [70-80): ROC-AUC ..."), so a reader
# of the stored texts (the dashboard) can tell which figure alarmed.
AUC_FIGURE, CALIBRATION_FIGURE = "ROC-AUC", "calibration gap"


@dataclass(frozen=True)
class EquityRules:
    """Which groups, how large they must be, and when a group's figures alarm."""

    attributes: tuple[str, ...] = ("age", "gender", "race")
    min_encounters: int = 200
    min_positives: int = 20
    auc_margin: float = 0.05
    calibration_margin: float = 0.03
    decision_threshold: float = 0.25
    rounds: int = 500
    confidence_level: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        check_attributes(self.attributes)
        for name in ("auc_margin", "calibration_margin"):
            if not 0.0 < getattr(self, name) < 0.5:
                raise ValueError(f"equity {name} must lie in (0, 0.5), not {getattr(self, name)}")


@dataclass(frozen=True)
class GroupFigures:
    """One group's figures in one window (the population's too, as attribute ``all``)."""

    attribute: str
    group: str
    members: tuple[str, ...]
    status: str  # "ok" | "alarm" | "too few"
    n_encounters: int
    n_patients: int
    n_positive: int
    observed_rate: float
    predicted_rate: float
    roc_auc: Interval
    auc_vs_all: Interval
    calibration_gap: Interval
    gap_vs_all: Interval
    flagged_share: Interval
    alarms: tuple[str, ...] = ()


@dataclass(frozen=True)
class EquityReport:
    """The population and every group of one window."""

    overall: GroupFigures
    groups: list[GroupFigures]

    @property
    def alarms(self) -> list[str]:
        """Every group alarm, ``"equity: ..."``."""
        return [alarm for group in self.groups for alarm in group.alarms]


@dataclass(frozen=True)
class _Rounds:
    """Per bootstrap round (and the point estimate) of one set of rows."""

    auc: np.ndarray
    gap: np.ndarray
    flagged: np.ndarray
    point: tuple[float, float, float]


def measure_equity(
    labels: np.ndarray,
    probabilities: np.ndarray,
    patients: pd.Series | np.ndarray,
    attributes: pd.DataFrame,
    rules: EquityRules,
) -> EquityReport:
    """Every group's figures with their intervals, and the alarms (see the module docstring).

    Args:
        labels: 0/1 outcomes.
        probabilities: Predicted risks as served.
        patients: Patient key of each row (the bootstrap resamples these).
        attributes: The group columns of ``rules.attributes``, aligned with ``labels``.
        rules: Groups, sizes, margins and the bootstrap.
    """
    y = np.asarray(labels, dtype=float)
    p = np.asarray(probabilities, dtype=float)
    weights = patient_bootstrap_matrix(patients, rules.rounds, rules.seed)
    patient_codes = pd.factorize(pd.Series(np.asarray(patients)))[0]
    everyone = Group("all", "all", (), np.ones(len(y), dtype=bool), True)
    population = _rounds(weights, y, p, rules.decision_threshold)
    overall = _figures(everyone, population, population, y, p, patient_codes, rules)
    groups = []
    for attribute in rules.attributes:
        values = attribute_values(attributes, attribute)
        pooled = pool_groups(values, y, attribute, rules.min_encounters, rules.min_positives)
        # One copy of the draws per attribute, its groups side by side: each group is a view.
        order = np.argsort(_group_codes(pooled, len(y)), kind="stable")
        ordered = weights[order]
        start = 0
        for group in pooled:
            end = start + int(group.mask.sum())
            rounds = None
            if group.enough:
                rows = order[start:end]
                rounds = _rounds(ordered[start:end], y[rows], p[rows], rules.decision_threshold)
            groups.append(_figures(group, rounds, population, y, p, patient_codes, rules))
            start = end
    return EquityReport(overall, groups)


def _group_codes(groups: list[Group], n_rows: int) -> np.ndarray:
    codes = np.full(n_rows, len(groups))
    for code, group in enumerate(groups):
        codes[group.mask] = code
    return codes


def _rounds(weights: np.ndarray, y: np.ndarray, p: np.ndarray, threshold: float) -> _Rounds:
    """Every round's AUC, calibration gap and flagged share of these rows (float32 draws)."""
    residual = (y - p).astype(np.float32)
    flagged = (p >= threshold).astype(np.float32)
    # Weighted sums by plain multiplication: a BLAS product would spin threads that, on two
    # cores shared with the service, cost more than the arithmetic.
    mass = weights.sum(axis=0, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = (weights * residual[:, None]).sum(axis=0, dtype=np.float64) / mass
        share = (weights * flagged[:, None]).sum(axis=0, dtype=np.float64) / mass
    auc = roc_auc_rounds(weights, y, p)
    point_auc = float(roc_auc_rounds(np.ones((len(y), 1), dtype=np.float32), y, p)[0])
    return _Rounds(auc, gap, share, (point_auc, float((y - p).mean()), float(flagged.mean())))


def _figures(
    group: Group,
    rounds: _Rounds | None,
    population: _Rounds,
    y: np.ndarray,
    p: np.ndarray,
    patient_codes: np.ndarray,
    rules: EquityRules,
) -> GroupFigures:
    """A group's figures; ``rounds`` None: too few to tell (counts only, no figure)."""
    mask, level = group.mask, rules.confidence_level
    counts: dict[str, Any] = {
        "n_encounters": int(mask.sum()),
        "n_patients": len(np.unique(patient_codes[mask])),
        "n_positive": int(y[mask].sum()),
        "observed_rate": float(y[mask].mean()) if mask.any() else float("nan"),
        "predicted_rate": float(p[mask].mean()) if mask.any() else float("nan"),
    }
    if rounds is None:
        nothing = Interval(float("nan"), float("nan"), float("nan"))
        return GroupFigures(
            group.attribute,
            group.name,
            group.members,
            TOO_FEW,
            **counts,
            roc_auc=nothing,
            auc_vs_all=nothing,
            calibration_gap=nothing,
            gap_vs_all=nothing,
            flagged_share=nothing,
        )
    auc, gap, share = rounds.point
    whole_auc, whole_gap, _ = population.point
    figures: dict[str, Any] = {
        "roc_auc": percentile_interval(auc, rounds.auc, level),
        "auc_vs_all": percentile_interval(auc - whole_auc, rounds.auc - population.auc, level),
        "calibration_gap": percentile_interval(gap, rounds.gap, level),
        "gap_vs_all": percentile_interval(gap - whole_gap, rounds.gap - population.gap, level),
        "flagged_share": percentile_interval(share, rounds.flagged, level),
    }
    alarms = tuple(_alarms(group, figures, whole_auc, whole_gap, rules))
    status = ALARM if alarms else OK
    return GroupFigures(
        group.attribute, group.name, group.members, status, **counts, **figures, alarms=alarms
    )


def _alarms(
    group: Group,
    figures: dict[str, Interval],
    whole_auc: float,
    whole_gap: float,
    rules: EquityRules,
) -> list[str]:
    if group.attribute == "all":
        return []
    alarms = []
    name = f"{group.attribute} {group.name}"
    auc_change = figures["auc_vs_all"]
    if auc_change.high < -rules.auc_margin:
        alarms.append(
            f"equity: {name}: {AUC_FIGURE} {figures['roc_auc']} against {whole_auc:.3f} for all "
            f"patients (difference {auc_change}, surely beyond -{rules.auc_margin:.3f})"
        )
    gap_change, margin = figures["gap_vs_all"], rules.calibration_margin
    if gap_change.low > margin or gap_change.high < -margin:
        alarms.append(
            f"equity: {name}: {CALIBRATION_FIGURE} {figures['calibration_gap']} (observed minus "
            f"predicted) against {whole_gap:+.3f} for all patients (difference {gap_change}, "
            f"surely beyond ±{margin:.3f})"
        )
    return alarms


# Columns of read_group_history, one row per window, model version and group (the population
# first, as attribute "all"); every figure NaN for a group too few to tell.
GROUP_HISTORY_COLUMNS = (
    "window",  # int: the window whose encounters are measured
    "version",  # str: the model version that served them
    "attribute",  # str: "all" | "age" | "gender" | "race" | ...
    "group",  # str: e.g. "Female", "[80-100)" (pooled bands), "other (Asian, Other)"
    "members",  # list[str]: the values the group pools
    "status",  # "ok" | "alarm" | "too few"
    "n",  # int: encounters with an outcome
    "n_patients",  # int
    "n_positive",  # int: readmissions
    "observed_rate",  # float
    "predicted_rate",  # float
    *(
        f"{name}{end}"
        for name in ("auc", "auc_vs_all", "calibration_gap", "gap_vs_all", "flagged_share")
        for end in ("", "_low", "_high")
    ),
    "alarms",  # list[str]: the group's equity alarms
    "known_at_window",  # int: the window whose monitor run measured it
)


def read_group_history(engine: Engine, deployment: str) -> pd.DataFrame:
    """Every group's figures over time for ``deployment`` (columns
    :data:`GROUP_HISTORY_COLUMNS`), ordered by window, version, attribute and group; empty
    when nothing was measured."""
    table = window_groups
    query = select(table).where(table.c.deployment == deployment)
    with engine.connect() as connection:
        return group_history(pd.read_sql(query, connection))


def group_history(rows: pd.DataFrame) -> pd.DataFrame:
    """``window_groups`` rows as read from the store, in the columns and order of
    :func:`read_group_history`."""
    frame = rows.rename(
        columns={
            "model_version": "version",
            "group_name": "group",
            "n_encounters": "n",
            "roc_auc": "auc",
            "roc_auc_low": "auc_low",
            "roc_auc_high": "auc_high",
        }
    )
    frame["_all_first"] = frame["attribute"] != "all"
    frame = frame.sort_values(["window", "version", "_all_first", "attribute", "group"])
    return frame.loc[:, list(GROUP_HISTORY_COLUMNS)].reset_index(drop=True)
