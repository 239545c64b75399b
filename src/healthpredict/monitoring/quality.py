"""Data-quality checks of a production batch against the contract, before anything scores it.

A batch is quarantined (kept aside whole, with the reason) when it cannot be trusted: a
contract column is missing or entirely empty, a column has the wrong type, or more rows than
tolerated break the contract. Otherwise the few rows that break it are set aside with their
reasons and the rest goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from healthpredict.data.schema import COLUMNS, ICD9_PATTERN, ID_COLUMNS, ColumnSpec, Kind

FEATURE_SPECS: tuple[ColumnSpec, ...] = tuple(s for s in COLUMNS if s.name not in ID_COLUMNS)


@dataclass(frozen=True)
class QualityResult:
    """What the checks found: a batch-level verdict and per-column violation counts."""

    n_rows: int
    quarantine_reason: str | None
    violations_by_column: dict[str, int] = field(default_factory=dict)
    invalid_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    @property
    def quarantined(self) -> bool:
        """Whether the whole batch is kept aside."""
        return self.quarantine_reason is not None

    @property
    def n_invalid(self) -> int:
        """Rows breaking the contract."""
        return int(self.invalid_rows.sum())


def check_batch(batch: pd.DataFrame, max_invalid_fraction: float) -> QualityResult:
    """Check a prepared batch (contract names, typed) against the contract."""
    if batch.empty:
        return QualityResult(0, "the batch has no rows")
    missing = [s.name for s in FEATURE_SPECS if s.name not in batch.columns]
    if missing:
        return QualityResult(len(batch), f"missing column(s): {', '.join(missing)}")
    empty = [s.name for s in FEATURE_SPECS if batch[s.name].isna().all()]
    if empty:
        return QualityResult(len(batch), f"column(s) with no values at all: {', '.join(empty)}")
    mistyped = [
        s.name
        for s in FEATURE_SPECS
        if s.kind is Kind.INTEGER and not pd.api.types.is_integer_dtype(batch[s.name])
    ]
    if mistyped:
        return QualityResult(len(batch), f"not integer column(s): {', '.join(mistyped)}")
    return _row_checks(batch, max_invalid_fraction)


def _row_checks(batch: pd.DataFrame, max_invalid_fraction: float) -> QualityResult:
    invalid = np.zeros(len(batch), dtype=bool)
    violations: dict[str, int] = {}
    for spec in FEATURE_SPECS:
        bad = _violations(batch[spec.name], spec)
        if bad.any():
            violations[spec.name] = int(bad.sum())
            invalid |= bad
    share = invalid.mean()
    reason = None
    if share > max_invalid_fraction:
        ranked = sorted(violations.items(), key=lambda item: -item[1])
        worst = ", ".join(f"{name}: {count:,}" for name, count in ranked)
        reason = (
            f"{share:.1%} of rows break the contract (tolerance {max_invalid_fraction:.1%}); "
            f"violations by column: {worst}"
        )
    return QualityResult(len(batch), reason, violations, invalid)


def _violations(values: pd.Series, spec: ColumnSpec) -> np.ndarray:
    """Rows of ``values`` breaking ``spec`` (typed values, None = missing)."""
    missing = values.isna().to_numpy()
    if spec.kind is Kind.INTEGER:
        ok = values.between(spec.minimum or 0, spec.maximum or 0).to_numpy()
    elif spec.kind is Kind.CATEGORY:
        ok = values.isin(spec.allowed or ()).to_numpy()
    elif spec.kind is Kind.ICD9:
        ok = values.astype(str).str.match(ICD9_PATTERN.pattern).to_numpy()
    else:
        ok = (values.astype(str).str.len() <= (spec.max_length or 0)).to_numpy()
    if spec.nullable:
        return ~(ok | missing)
    return ~ok | missing


def record_violations(batch: pd.DataFrame) -> dict[int, list[str]]:
    """The fields each contract-breaking row of ``batch`` breaks, by row position."""
    found: dict[int, list[str]] = {}
    for spec in FEATURE_SPECS:
        if spec.name not in batch.columns:
            for row in range(len(batch)):
                found.setdefault(row, []).append(spec.name)
            continue
        for position in np.flatnonzero(_violations(batch[spec.name], spec)).tolist():
            found.setdefault(position, []).append(spec.name)
    return found
