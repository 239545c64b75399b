"""Every contract field, watched with a statistic suited to its type, at a known false-alarm rate.

A field is compared with the model's reference in two ways:

- **distribution**: Jensen-Shannon distance of the value shares for categories, codes and coded
  integers (missing is a value of its own, so a field going empty moves it), and the first
  Wasserstein distance in units of the reference's standard deviation for counts (a location
  or scale change). Both are effect sizes: 0 for identical distributions, growing with the
  shift. Evidently computes them on each batch (:mod:`healthpredict.monitoring.drift`).
- **quality**: what a distribution over hundreds of sparse codes dilutes. Values never seen in
  the reference, values written in a shape never seen (``"250.01"`` becoming ``"250.1"`` or
  ``"Surgery-General"`` becoming ``"surgery general"``), a share of empty values that moved,
  and the number of distinct values a batch takes.

Calibration: every check has a threshold such that, on a batch of the same size drawn from the
reference's population, the chance that *any* check of *any* field fires is at most the
configured family-wise level. Each check gets the Sidak share of it, ``1 - (1 - level)^(1/m)``
over ``m`` checks (valid whatever the dependence between fields, exact when independent), and
its threshold is the null distribution's quantile at that share:

- distribution statistics: a parametric bootstrap. Batch and reference are redrawn from the
  reference's value shares (Poisson counts, batch size and reference size), with the mass of
  values the reference has not seen estimated by Good-Turing (its share of values seen once,
  plus one) and spread over as many new values; the far tail is read from a gamma distribution
  matched to the mean and variance of the squared statistic over the draws (squared distances
  are asymptotically weighted sums of chi-squares, which a two-moment gamma approximates
  well), and never below the largest draw;
- counts (empty values, rows with unseen values or shapes): beta-binomial predictive
  distributions, the reference share being uncertain too (Jeffreys prior);
- distinct values: as in a random subset of the reference's rows of the batch's size (closed
  form); batches larger than the reference are not checked for it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import pandas as pd
from scipy import stats

from healthpredict.data.schema import COLUMNS, ID_COLUMNS, ColumnSpec, Kind

MISSING = "(missing)"
NULL_DRAWS = 500
MIN_CARDINALITY = 20  # fewer distinct reference values: the distribution check says it all
EXAMPLES = 3


class Statistic(StrEnum):
    """A distribution statistic, by its Evidently method name."""

    JENSEN_SHANNON = "jensenshannon"
    WASSERSTEIN = "wasserstein"


class Check(StrEnum):
    """What a finding on a field is about."""

    DISTRIBUTION = "distribution"
    MISSINGNESS = "missingness"
    NEW_VALUES = "new_values"
    FORMAT = "format"
    CARDINALITY = "cardinality"


@dataclass(frozen=True)
class WatchedField:
    """A contract field and how it is compared."""

    name: str
    statistic: Statistic
    nullable: bool
    written: bool  # its values are text a person or system writes (format can change)


def watched_fields() -> tuple[WatchedField, ...]:
    """Every feature field of the contract."""
    return tuple(_watched(spec) for spec in COLUMNS if spec.name not in ID_COLUMNS)


def _watched(spec: ColumnSpec) -> WatchedField:
    quantity = spec.kind is Kind.INTEGER and not spec.coded
    return WatchedField(
        name=spec.name,
        statistic=Statistic.WASSERSTEIN if quantity else Statistic.JENSEN_SHANNON,
        nullable=spec.nullable,
        written=spec.kind is not Kind.INTEGER,
    )


WATCHED: tuple[WatchedField, ...] = watched_fields()
CATEGORICAL: tuple[str, ...] = tuple(
    f.name for f in WATCHED if f.statistic is Statistic.JENSEN_SHANNON
)
NUMERICAL: tuple[str, ...] = tuple(f.name for f in WATCHED if f.statistic is Statistic.WASSERSTEIN)


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    """The watched fields of a prepared frame as compared: text with :data:`MISSING` for
    categorical fields (codes as written), floats for counts."""
    columns: dict[str, pd.Series] = {name: frame[name].astype(float) for name in NUMERICAL}
    for name in CATEGORICAL:
        values = frame[name]
        columns[name] = values.astype(object).where(values.notna(), MISSING).astype(str)
    return pd.DataFrame({f.name: columns[f.name] for f in WATCHED}).reset_index(drop=True)


def shape(value: str) -> str:
    """How a value is written: each digit a ``9``, each run of capitals ``A``, of small letters
    ``a`` (``"250.01"`` -> ``"999.99"``, ``"Surgery-General"`` -> ``"Aa-Aa"``)."""
    return re.sub(r"[a-z]+", "a", re.sub(r"[A-Z]+", "A", re.sub(r"\d", "9", value)))


# --- null distributions ---------------------------------------------------------------------
def _shares(counts: np.ndarray) -> np.ndarray:
    """Rows of counts as shares (a row without any count stays all zero)."""
    totals = counts.sum(axis=-1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts, dtype=float), where=totals > 0)


def jensen_shannon(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Jensen-Shannon distance (natural log, as scipy and Evidently) between rows of counts."""
    p, q = _shares(reference), _shares(current)
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log(p / m), 0.0).sum(axis=-1)
        kl_q = np.where(q > 0, q * np.log(q / m), 0.0).sum(axis=-1)
    return np.sqrt(np.maximum((kl_p + kl_q) / 2, 0.0))


def wasserstein(values: np.ndarray, reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """First Wasserstein distance over the reference's standard deviation (as Evidently's
    ``wasserstein``) between rows of counts over the sorted ``values``."""
    p, q = _shares(reference), _shares(current)
    gaps = np.diff(values)
    distance = (np.abs(np.cumsum(p - q, axis=-1)[..., :-1]) * gaps).sum(axis=-1)
    mean = (p * values).sum(axis=-1, keepdims=True)
    std = np.sqrt((p * (values - mean) ** 2).sum(axis=-1))
    return distance / np.maximum(std, 0.001)


def gamma_quantile(draws: np.ndarray, share: float) -> float:
    """The statistic exceeded with probability ``share``: a gamma matched to the mean and
    variance of the squared draws, read at ``1 - share``, as a distance again; never below the
    largest draw. (A field nearly constant in the reference, a drug given to three patients in
    ten thousand, has a statistic with a few large atoms, one per rare value a batch happens to
    hold: the gamma's smooth tail falls below them; the largest draw does not.)"""
    squared = draws**2
    mean, variance = float(squared.mean()), float(squared.var())
    largest = float(draws.max())
    if variance <= 0 or mean <= 0:
        return largest
    shape_parameter, scale = mean**2 / variance, variance / mean
    return max(float(np.sqrt(stats.gamma.ppf(1 - share, shape_parameter, scale=scale))), largest)


def count_band(seen: int, total: int, n: int, share: float) -> tuple[int, int]:
    """Counts of a kind of row in a batch of ``n`` outside which the check fires (two-sided,
    ``share`` in all), the reference having ``seen`` of ``total``: beta-binomial predictive."""
    low, high = _betabinom_quantiles(seen, total, n, (share / 2, 1 - share / 2))
    return low, high


def count_upper(seen: int, total: int, n: int, share: float) -> int:
    """One-sided version of :func:`count_band`: the count above which the check fires."""
    return _betabinom_quantiles(seen, total, n, (1 - share,))[0]


@functools.cache
def _betabinom_quantiles(
    seen: int, total: int, n: int, levels: tuple[float, ...]
) -> tuple[int, ...]:
    # From the whole mass function at once: scipy's generic discrete ppf is a slow search.
    cdf = np.cumsum(stats.betabinom.pmf(np.arange(n + 1), n, seen + 0.5, total - seen + 0.5))
    return tuple(min(int(np.searchsorted(cdf, level)), n) for level in levels)


@dataclass(frozen=True)
class FieldNull:
    """One field's thresholds for batches of one size (see the module docstring).

    Attributes:
        statistic: Distribution statistic above which the field is flagged.
        missing_band: Empty values outside this closed range are flagged (nullable fields).
        new_values_above: More rows with values unseen in the reference are flagged.
        new_shapes_above: More rows written in a shape unseen in the reference are flagged.
        cardinality_band: Distinct values outside this closed range are flagged (or None).
    """

    statistic: float
    missing_band: tuple[int, int] | None
    new_values_above: int | None
    new_shapes_above: int | None
    cardinality_band: tuple[int, int] | None


@dataclass(frozen=True)
class ReferenceField:
    """What calibration and the quality checks need of one field's reference values."""

    field: WatchedField
    counts: pd.Series  # comparable value -> count, values sorted
    shape_counts: pd.Series  # shape -> count (empty for fields that are not written)

    @classmethod
    def of(cls, field: WatchedField, values: pd.Series) -> ReferenceField:
        """Summarise the reference ``values`` (comparable, see :func:`comparable`)."""
        counts = values.value_counts().sort_index()
        shapes = pd.Series(dtype=int)
        if field.written:
            shapes = counts.groupby([shape(v) for v in counts.index]).sum()
        return cls(field, counts, shapes)

    @property
    def rows(self) -> int:
        """Reference rows."""
        return int(self.counts.sum())

    def checks(self, batch_rows: int) -> tuple[Check, ...]:
        """The checks this field gets on batches of ``batch_rows``."""
        found = [Check.DISTRIBUTION]
        if self.field.nullable:
            found.append(Check.MISSINGNESS)
        if self.field.statistic is Statistic.JENSEN_SHANNON:
            found.append(Check.NEW_VALUES)
        if self.field.written:
            found.append(Check.FORMAT)
        if len(self.counts) >= MIN_CARDINALITY and batch_rows <= self.rows:
            found.append(Check.CARDINALITY)
        return tuple(found)

    def statistic_threshold(self, batch_rows: int, share: float, rng: np.random.Generator) -> float:
        """The distribution statistic exceeded with probability ``share`` by batches of
        ``batch_rows`` from the reference's population."""
        reference, current = self._null_draws(batch_rows, rng)
        if self.field.statistic is Statistic.WASSERSTEIN:
            known = len(self.counts)  # unseen counts have no position: left out
            values = self.counts.index.to_numpy(dtype=float)
            draws = wasserstein(values, reference[:, :known], current[:, :known])
        else:
            draws = jensen_shannon(reference, current)
        return gamma_quantile(draws, share)

    def null(self, batch_rows: int, share: float, rng: np.random.Generator) -> FieldNull:
        """Thresholds for batches of ``batch_rows`` at the per-check false-alarm ``share``."""
        checks, total = self.checks(batch_rows), self.rows
        missing = int(self.counts.get(MISSING, 0))
        return FieldNull(
            statistic=self.statistic_threshold(batch_rows, share, rng),
            missing_band=(
                count_band(missing, total, batch_rows, share)
                if Check.MISSINGNESS in checks
                else None
            ),
            new_values_above=(
                count_upper(_singletons(self.counts), total, batch_rows, share)
                if Check.NEW_VALUES in checks
                else None
            ),
            new_shapes_above=(
                count_upper(_singletons(self.shape_counts), total, batch_rows, share)
                if Check.FORMAT in checks
                else None
            ),
            cardinality_band=(
                self._distinct_band(batch_rows, share) if Check.CARDINALITY in checks else None
            ),
        )

    def _null_draws(
        self, batch_rows: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Reference and batch counts redrawn from the reference's shares, with as many unseen
        values as the reference has singletons appended.

        Counts are Poisson, not multinomial: the same for statistics of shares at these sizes,
        and drawn for every value at once.
        """
        counts = self.counts.to_numpy(dtype=float)
        counts = np.concatenate([counts, np.ones(_singletons(self.counts))])
        shares = counts / counts.sum()
        size = (NULL_DRAWS, len(shares))
        reference = rng.poisson(self.rows * shares, size=size).astype(float)
        current = rng.poisson(batch_rows * shares, size=size).astype(float)
        return reference, current

    def _distinct_band(self, batch_rows: int, share: float) -> tuple[int, int]:
        """Distinct values a batch takes: as in a random subset of the reference's rows.

        An ``n``-row subset of the reference's i.i.d. rows is an i.i.d. sample, so its distinct
        count is distributed as a fresh batch's, where redrawing from the value shares is not:
        a value seen once in the reference is on average rarer than one in the reference's
        size. Subsets are drawn by keeping each row with probability ``n / R``, so each value
        is in it independently (mean and variance in closed form); the spread is widened by
        ``1 + n / R`` for the reference's own variation around the population.
        """
        kept = min(batch_rows / self.rows, 1.0)
        present = 1 - (1 - kept) ** self.counts.to_numpy(dtype=float)
        mean = float(present.sum())
        spread = max(float(np.sqrt((present * (1 - present)).sum() * (1 + kept))), 1.0)
        z = float(stats.norm.ppf(1 - share / 2))
        return int(np.floor(mean - z * spread)), int(np.ceil(mean + z * spread))


def _singletons(counts: pd.Series) -> int:
    """Values seen once, plus one: times the size, the Good-Turing estimate of the unseen mass
    (the one more: a reference without a singleton has not shown that nothing else occurs)."""
    return int((counts == 1).sum()) + 1


@dataclass(frozen=True)
class Finding:
    """A check that fired on one field of one batch.

    Attributes:
        field: The field.
        check: What the finding is about.
        value: What was measured (statistic, rows, distinct values).
        limit: The calibrated limit it crossed (the upper one for a band).
        detail: One line for people: the effect, against the reference, with examples.
    """

    field: str
    check: Check
    value: float
    limit: float
    detail: str


def quality_findings(
    reference: ReferenceField, values: pd.Series, null: FieldNull
) -> list[Finding]:
    """The quality checks of one field's batch ``values`` (comparable) against ``null``."""
    name, rows = reference.field.name, len(values)
    found: list[Finding] = []
    if null.missing_band is not None:
        low, high = null.missing_band
        empty = int((values == MISSING).sum())
        if not low <= empty <= high:
            before = reference.counts.get(MISSING, 0) / reference.rows
            found.append(
                Finding(
                    name,
                    Check.MISSINGNESS,
                    empty,
                    high,
                    f"{empty / rows:.1%} empty against {before:.1%} in the reference "
                    f"(expected {low:,}-{high:,} of {rows:,} rows)",
                )
            )
    if null.new_values_above is not None:
        unseen = values[~values.isin(reference.counts.index)]
        if len(unseen) > null.new_values_above:
            found.append(
                Finding(
                    name,
                    Check.NEW_VALUES,
                    len(unseen),
                    null.new_values_above,
                    f"{len(unseen):,} rows ({len(unseen) / rows:.1%}) with values the "
                    f"reference never had (at most {null.new_values_above:,} expected), "
                    f"e.g. {_examples(unseen)}",
                )
            )
    if null.new_shapes_above is not None:
        written = pd.Series({value: shape(value) for value in values.unique()})
        novel = values[~values.map(written).isin(reference.shape_counts.index)]
        if len(novel) > null.new_shapes_above:
            found.append(
                Finding(
                    name,
                    Check.FORMAT,
                    len(novel),
                    null.new_shapes_above,
                    f"{len(novel):,} rows ({len(novel) / rows:.1%}) written in a shape the "
                    f"reference never had (at most {null.new_shapes_above:,} expected), "
                    f"e.g. {_examples(novel, with_shape=True)}",
                )
            )
    if null.cardinality_band is not None:
        low, high = null.cardinality_band
        distinct = int(values.nunique())
        if not low <= distinct <= high:
            found.append(
                Finding(
                    name,
                    Check.CARDINALITY,
                    distinct,
                    high,
                    f"{distinct:,} distinct values, expected {low:,}-{high:,} "
                    f"({len(reference.counts):,} in the reference)",
                )
            )
    return found


def _examples(values: pd.Series, with_shape: bool = False) -> str:
    """The most frequent of ``values``, quoted, with their counts (and shapes)."""
    top = values.value_counts().head(EXAMPLES)
    shown = [
        f"{value!r}" + (f" ({shape(str(value))})" if with_shape else "") + f" x{count:,}"
        for value, count in top.items()
    ]
    return ", ".join(shown)


@dataclass(frozen=True)
class Calibration:
    """Every field's thresholds for batches of one size.

    Attributes:
        batch_rows: The batch size calibrated for.
        level: Family-wise false-alarm level over every check of every field.
        share: Each check's false-alarm share (Sidak).
        nulls: Thresholds by field.
    """

    batch_rows: int
    level: float
    share: float
    nulls: dict[str, FieldNull]


class FieldReference:
    """The reference of every watched field, calibrated on demand per batch size."""

    def __init__(self, reference: pd.DataFrame, level: float, seed: int = 0):
        """Summarise ``reference`` (prepared frame) for a family-wise false-alarm ``level``."""
        values = comparable(reference)
        self.values = values  # the reference as compared, for the statistics and the report
        self.level = level
        self.seed = seed
        self.fields = {f.name: ReferenceField.of(f, values[f.name]) for f in WATCHED}
        self._calibrations: dict[int, Calibration] = {}

    def n_checks(self, batch_rows: int) -> int:
        """Checks over all fields on batches of ``batch_rows``: the family sharing the level."""
        return sum(len(field.checks(batch_rows)) for field in self.fields.values())

    def calibration(self, batch_rows: int) -> Calibration:
        """Thresholds for batches of ``batch_rows`` (computed once per size)."""
        if batch_rows not in self._calibrations:
            share = 1 - (1 - self.level) ** (1 / self.n_checks(batch_rows))
            rng = np.random.default_rng([self.seed, batch_rows])
            nulls = {
                name: field.null(batch_rows, share, rng) for name, field in self.fields.items()
            }
            self._calibrations[batch_rows] = Calibration(batch_rows, self.level, share, nulls)
        return self._calibrations[batch_rows]
