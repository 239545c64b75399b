"""Drift scenarios: known changes injected into production batches, with the truth recorded.

A scenario set is a YAML file (see the packaged ``scenarios/default.yaml``). Each scenario names
the batches it applies to and one of four kinds of change:

- ``covariate_shift``: who arrives changes (an older population, longer stays); the relation
  between features and readmission does not.
- ``prior_shift``: the readmission rate changes; each class keeps its own feature profile
  (rows are resampled by class).
- ``concept_drift``: for one subgroup the outcome no longer follows the old relation (labels are
  redrawn at a new rate), e.g. a follow-up programme for frequent inpatients.
- ``outcome_shuffle``: a concept drift confined to one subgroup that leaves its readmission
  rate alone: the outcomes of (a share of) its encounters are shuffled among them, so they
  follow the features less and the model ranks that group worse; the population's
  calibration does not move (the equity monitor's scenario, ``scenarios/one-group.yaml``).
- ``data_quality``: an upstream fault: a column dropped, emptied, rescaled or recoded.

Injected labels are part of the batch from then on: the simulation stores the batch as
injected, so retraining and evaluation see the changed outcomes.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from healthpredict.data.prepare import TARGET
from healthpredict.data.schema import AGE_BANDS, FEATURE_COLUMNS
from healthpredict.errors import HealthPredictError

MAX_STAY_DAYS = 14  # the contract's bound: a longer-stay shift saturates here


class ScenarioError(HealthPredictError):
    """A scenario file is missing, malformed, or names something that does not exist."""


_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq,
    "!=": operator.ne,
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}


class Condition(BaseModel):
    """``column op value``, or ``column in [values]``: a subgroup without code execution."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    column: str
    op: Literal["==", "!=", ">=", "<=", ">", "<", "in"]
    value: Any

    @model_validator(mode="after")
    def _known_column(self) -> Condition:
        if self.column not in FEATURE_COLUMNS:
            raise ValueError(f"unknown column {self.column!r} in a subgroup condition")
        if self.op == "in" and not isinstance(self.value, list):
            raise ValueError("'in' needs a list of values")
        return self

    def mask(self, frame: pd.DataFrame) -> pd.Series:
        """Rows of ``frame`` in the subgroup."""
        column = frame[self.column]
        if self.op == "in":
            return column.isin(self.value)
        return _OPERATORS[self.op](column, self.value).fillna(False).astype(bool)

    def __str__(self) -> str:
        return f"{self.column} {self.op} {self.value}"


class _Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, max_length=80)
    description: str = ""
    start: int = Field(ge=1, description="First batch (1-based) the scenario applies to.")
    end: int | None = Field(
        default=None, ge=1, description="Last batch (inclusive); none = to the end."
    )

    @model_validator(mode="after")
    def _ordered(self) -> _Scenario:
        if self.end is not None and self.end < self.start:
            raise ValueError(f"scenario {self.name!r}: end {self.end} is before start {self.start}")
        return self

    def active(self, batch: int) -> bool:
        """Whether the scenario applies to ``batch`` (1-based)."""
        return self.start <= batch and (self.end is None or batch <= self.end)


class CovariateShift(_Scenario):
    """Resample toward older patients and lengthen stays."""

    kind: Literal["covariate_shift"]
    min_age: int = Field(default=70, ge=0, le=90, description="Age band floor counted as old.")
    old_share: float = Field(default=0.7, gt=0.0, lt=1.0, description="Share of old patients.")
    extra_days: int = Field(default=2, ge=0, le=13, description="Days added to every stay.")


class PriorShift(_Scenario):
    """Change the readmission rate by resampling each class."""

    kind: Literal["prior_shift"]
    rate_factor: float = Field(gt=0.0, le=5.0, description="New rate = old rate x factor.")


class ConceptDrift(_Scenario):
    """Redraw the outcome of a subgroup at a new rate, whatever its features say."""

    kind: Literal["concept_drift"]
    subgroup: Condition
    positive_rate: float = Field(ge=0.0, le=1.0)


class OutcomeShuffle(_Scenario):
    """Shuffle the outcomes of a share of a subgroup's encounters among themselves."""

    kind: Literal["outcome_shuffle"]
    subgroup: Condition
    share: float = Field(default=1.0, gt=0.0, le=1.0, description="Share of its encounters.")


class DataQuality(_Scenario):
    """An upstream fault in one column."""

    kind: Literal["data_quality"]
    column: str
    fault: Literal["drop", "null", "scale", "recode"]
    factor: float = 24.0
    mapping: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_column(self) -> DataQuality:
        if self.column not in FEATURE_COLUMNS:
            raise ValueError(f"unknown column {self.column!r}")
        if self.fault == "recode" and not self.mapping:
            raise ValueError("a recode fault needs a mapping")
        return self


Scenario = Annotated[
    CovariateShift | PriorShift | ConceptDrift | OutcomeShuffle | DataQuality,
    Field(discriminator="kind"),
]


class ScenarioSet(BaseModel):
    """A named list of scenarios."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, max_length=80)
    description: str = ""
    scenarios: list[Scenario] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> ScenarioSet:
        names = [s.name for s in self.scenarios]
        if len(names) != len(set(names)):
            raise ValueError("scenario names must be unique")
        return self

    def active(self, batch: int) -> list[Scenario]:
        """Scenarios applying to ``batch`` (1-based), in file order."""
        return [s for s in self.scenarios if s.active(batch)]


NO_SCENARIOS = ScenarioSet(name="none", description="no injected change")


@dataclass(frozen=True)
class Injection:
    """The ground truth of one scenario applied to one batch."""

    scenario: str
    kind: str
    batch: int
    rows_changed: int
    labels_changed: int
    prevalence_before: float
    prevalence_after: float
    detail: str


def load_scenarios(path: Path | None) -> ScenarioSet:
    """Read a scenario set; ``None`` reads the packaged default set.

    Raises:
        ScenarioError: The file is missing, is not YAML, or breaks the schema.
    """
    if path is None:
        text = resources.files("healthpredict.monitoring").joinpath("scenarios/default.yaml")
        return _parse(text.read_text(), "the packaged default scenarios")
    if not path.is_file():
        raise ScenarioError(f"scenario file {path} does not exist")
    return _parse(path.read_text(), str(path))


def _parse(text: str, origin: str) -> ScenarioSet:
    try:
        return ScenarioSet.model_validate(yaml.safe_load(text))
    except yaml.YAMLError as error:
        raise ScenarioError(f"{origin} is not valid YAML: {error}") from error
    except ValidationError as error:
        raise ScenarioError(f"{origin} breaks the scenario schema: {error}") from error


def inject(
    batch: pd.DataFrame, scenarios: ScenarioSet, batch_index: int, seed: int
) -> tuple[pd.DataFrame, list[Injection]]:
    """Apply every scenario active at ``batch_index`` (in file order); return the new batch.

    The random choices depend only on ``seed``, the batch and the scenario, so re-running a
    batch injects exactly the same change.
    """
    injections = []
    for position, scenario in enumerate(scenarios.active(batch_index)):
        rng = np.random.default_rng([seed, batch_index, position])
        prevalence_before = float(batch[TARGET].mean())
        change = _APPLY[scenario.kind](batch, scenario, rng)  # type: ignore[operator]
        batch = change.frame
        injections.append(
            Injection(
                scenario=scenario.name,
                kind=scenario.kind,
                batch=batch_index,
                rows_changed=change.rows_changed,
                labels_changed=change.labels_changed,
                prevalence_before=prevalence_before,
                prevalence_after=float(batch[TARGET].mean()),
                detail=change.detail,
            )
        )
    return batch, injections


@dataclass(frozen=True)
class _Change:
    frame: pd.DataFrame
    detail: str
    rows_changed: int  # resampling counts every row: the batch is a new draw
    labels_changed: int


def _resample(frame: pd.DataFrame, weights: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """Draw ``len(frame)`` rows with probability proportional to ``weights``, keeping time order."""
    chosen = rng.choice(len(frame), size=len(frame), replace=True, p=weights / weights.sum())
    return frame.iloc[np.sort(chosen)].reset_index(drop=True)


def _covariate_shift(
    batch: pd.DataFrame, scenario: CovariateShift, rng: np.random.Generator
) -> _Change:
    old_bands = [band for band in AGE_BANDS if int(band[1:].split("-")[0]) >= scenario.min_age]
    is_old = batch["age"].isin(old_bands).to_numpy()
    if is_old.all() or not is_old.any():
        raise ScenarioError(f"{scenario.name}: the batch has no mix of ages to reweight")
    share = scenario.old_share
    weights = np.where(is_old, share / is_old.sum(), (1 - share) / (~is_old).sum())
    shifted = _resample(batch, weights, rng)
    longer = shifted["time_in_hospital"] + scenario.extra_days
    shifted["time_in_hospital"] = longer.clip(upper=MAX_STAY_DAYS).astype(np.int64)
    detail = (
        f"age >= {scenario.min_age} share {is_old.mean():.2f} -> {scenario.old_share:.2f}; "
        f"stays +{scenario.extra_days} days (max {MAX_STAY_DAYS})"
    )
    return _Change(shifted, detail, len(shifted), 0)


def _prior_shift(batch: pd.DataFrame, scenario: PriorShift, rng: np.random.Generator) -> _Change:
    positive = batch[TARGET].to_numpy() == 1
    rate = positive.mean()
    new_rate = min(rate * scenario.rate_factor, 0.95)
    if not 0 < rate < 1:
        raise ScenarioError(f"{scenario.name}: the batch needs both outcomes to shift the rate")
    weights = np.where(positive, new_rate / positive.sum(), (1 - new_rate) / (~positive).sum())
    detail = f"readmission rate {rate:.3f} -> {new_rate:.3f}"
    return _Change(_resample(batch, weights, rng), detail, len(batch), 0)


def _concept_drift(
    batch: pd.DataFrame, scenario: ConceptDrift, rng: np.random.Generator
) -> _Change:
    members = scenario.subgroup.mask(batch).to_numpy()
    drifted = batch.copy()
    dtype = batch[TARGET].to_numpy().dtype
    new_labels = (rng.random(int(members.sum())) < scenario.positive_rate).astype(dtype)
    old_labels = batch.loc[members, TARGET].to_numpy()
    old_rate = old_labels.mean() if members.any() else float("nan")
    drifted.loc[members, TARGET] = new_labels
    detail = (
        f"subgroup {scenario.subgroup} ({members.mean():.1%} of rows): readmission rate "
        f"{old_rate:.3f} -> {scenario.positive_rate:.3f} regardless of features"
    )
    labels_changed = int((old_labels != new_labels).sum())
    return _Change(drifted, detail, int(members.sum()), labels_changed)


def _outcome_shuffle(
    batch: pd.DataFrame, scenario: OutcomeShuffle, rng: np.random.Generator
) -> _Change:
    members = np.flatnonzero(scenario.subgroup.mask(batch).to_numpy())
    if len(members) < 2:
        raise ScenarioError(f"{scenario.name}: the batch has fewer than two rows in the subgroup")
    chosen = rng.choice(members, size=max(2, round(len(members) * scenario.share)), replace=False)
    shuffled = batch.copy()
    labels = batch[TARGET].to_numpy().copy()
    old_labels = labels[chosen]
    new_labels = rng.permutation(old_labels)
    labels[chosen] = new_labels
    shuffled[TARGET] = labels
    detail = (
        f"subgroup {scenario.subgroup} ({len(members) / len(batch):.1%} of rows): outcomes of "
        f"{len(chosen):,} encounters shuffled among them (rate {old_labels.mean():.3f} kept)"
    )
    return _Change(shuffled, detail, len(chosen), int((old_labels != new_labels).sum()))


def _data_quality(batch: pd.DataFrame, scenario: DataQuality, rng: np.random.Generator) -> _Change:
    faulty = batch.copy()
    column = scenario.column
    n = len(batch)
    if scenario.fault == "drop":
        return _Change(faulty.drop(columns=[column]), f"column {column} missing", n, 0)
    if scenario.fault == "null":
        faulty[column] = None
        return _Change(faulty, f"column {column} all null", n, 0)
    if scenario.fault == "scale":
        if not pd.api.types.is_numeric_dtype(faulty[column]):
            raise ScenarioError(f"{scenario.name}: cannot rescale the text column {column}")
        faulty[column] = (faulty[column] * scenario.factor).round().astype(np.int64)
        changed = int((faulty[column] != batch[column]).sum())
        return _Change(faulty, f"column {column} in new units (x{scenario.factor:g})", changed, 0)
    faulty[column] = faulty[column].map(lambda v: scenario.mapping.get(v, v))
    changed = int(batch[column].isin(list(scenario.mapping)).sum())
    return _Change(faulty, f"column {column} recoded: {scenario.mapping}", changed, 0)


_APPLY = {
    "covariate_shift": _covariate_shift,
    "prior_shift": _prior_shift,
    "concept_drift": _concept_drift,
    "outcome_shuffle": _outcome_shuffle,
    "data_quality": _data_quality,
}
