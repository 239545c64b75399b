"""Check raw encounter records against the contract in :mod:`healthpredict.data.schema`.

Rows that break the contract are set aside with the reason, never dropped silently or coerced;
the caller decides, through a tolerance, whether the extract as a whole is acceptable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from healthpredict.data.schema import ICD9_PATTERN, MISSING_TOKEN, ColumnSpec, Kind, column_specs
from healthpredict.errors import HealthPredictError

REJECTION_REASON = "rejection_reason"
_INTEGER_TEXT = r"^-?\d+$"


class ContractError(HealthPredictError):
    """The extract cannot be checked row by row (missing columns, no rows) or breaks tolerance."""


@dataclass(frozen=True)
class ValidationReport:
    """What the contract check found."""

    n_rows: int
    n_valid: int
    violations_by_column: dict[str, int] = field(default_factory=dict)
    extra_columns: tuple[str, ...] = ()

    @property
    def n_rejected(self) -> int:
        """Rows set aside."""
        return self.n_rows - self.n_valid

    @property
    def invalid_fraction(self) -> float:
        """Share of rows set aside."""
        return self.n_rejected / self.n_rows if self.n_rows else 0.0

    def summary(self) -> str:
        """One readable paragraph: counts, then violations per column."""
        text = (
            f"{self.n_rows:,} rows checked, {self.n_valid:,} valid, {self.n_rejected:,} set aside"
        )
        if self.violations_by_column:
            parts = ", ".join(f"{col}: {n:,}" for col, n in self.violations_by_column.items())
            text += f"; violations by column: {parts}"
        if self.extra_columns:
            text += f"; columns not in the contract (ignored): {', '.join(self.extra_columns)}"
        return text

    def raise_if_exceeds(self, max_invalid_fraction: float) -> None:
        """Raise ContractError when more rows than tolerated break the contract."""
        if self.invalid_fraction > max_invalid_fraction:
            raise ContractError(
                f"{self.invalid_fraction:.2%} of rows break the contract "
                f"(tolerance {max_invalid_fraction:.2%}): {self.summary()}"
            )


@dataclass(frozen=True)
class ValidationResult:
    """Typed valid rows (snake_case names), rejected raw rows with reasons, and the report."""

    valid: pd.DataFrame
    rejected: pd.DataFrame
    report: ValidationReport


def validate_raw(raw: pd.DataFrame, with_label: bool = True) -> ValidationResult:
    """Check an all-text raw frame against the contract and type the rows that pass.

    Args:
        raw: Frame with the extract's column names, every cell a string.
        with_label: Whether the ``readmitted`` label must be present (training data).

    Raises:
        ContractError: A contract column is missing or there are no rows at all.
    """
    specs = column_specs(with_label)
    missing = [s.raw_name for s in specs if s.raw_name not in raw.columns]
    if missing:
        raise ContractError(f"missing column(s): {', '.join(missing)}")
    if raw.empty:
        raise ContractError("the extract has a header but no rows")
    contract_names = {s.raw_name for s in specs}
    extra = tuple(c for c in raw.columns if c not in contract_names)

    reasons = pd.Series("", index=raw.index, dtype=object)
    violations: dict[str, int] = {}
    for spec in specs:
        bad, problem = check_column(raw[spec.raw_name].astype(str), spec)
        if bad.any():
            violations[spec.raw_name] = int(bad.sum())
            values = raw.loc[bad, spec.raw_name].astype(str).str.slice(0, 40)
            reasons[bad] = reasons[bad] + f"{spec.raw_name}: {problem} (" + values + "); "
    duplicated = raw["encounter_id"].duplicated(keep="first")
    if duplicated.any():
        violations["encounter_id (duplicate)"] = int(duplicated.sum())
        reasons[duplicated] = reasons[duplicated] + "encounter_id: duplicate of an earlier row; "

    is_bad = reasons != ""
    rejected = raw.loc[is_bad].copy()
    rejected[REJECTION_REASON] = reasons[is_bad].str.rstrip("; ")
    valid = _typed(raw.loc[~is_bad], specs)
    report = ValidationReport(len(raw), len(valid), violations, extra)
    return ValidationResult(valid=valid, rejected=rejected.reset_index(drop=True), report=report)


def check_column(values: pd.Series, spec: ColumnSpec) -> tuple[pd.Series, str]:
    """Return the mask of values (text, ``?`` = missing) breaking ``spec``, and the problem."""
    missing = values == MISSING_TOKEN
    if spec.kind is Kind.INTEGER:
        is_int = values.str.match(_INTEGER_TEXT)
        numbers = pd.to_numeric(values.where(is_int), errors="coerce")
        in_range = numbers.between(spec.minimum or 0, spec.maximum or 0)
        return ~(is_int & in_range), f"not an integer in [{spec.minimum}, {spec.maximum}]"
    if spec.kind is Kind.CATEGORY:
        ok = values.isin(spec.allowed or ())
        problem = "not one of " + "/".join(spec.allowed or ())
    elif spec.kind is Kind.ICD9:
        ok = values.str.match(ICD9_PATTERN.pattern)
        problem = "not an ICD-9 code"
    else:
        ok = (values.str.len() <= (spec.max_length or 0)) & (values.str.strip() != "")
        problem = f"empty or longer than {spec.max_length} characters"
    if spec.nullable:
        return ~(ok | missing), problem
    return ~ok, problem + ("; missing not allowed" if missing.any() else "")


def _typed(rows: pd.DataFrame, specs: tuple[ColumnSpec, ...]) -> pd.DataFrame:
    """Convert valid text rows to typed columns with the contract's snake_case names."""
    typed: dict[str, pd.Series] = {}
    for spec in specs:
        column = rows[spec.raw_name]
        if spec.kind is Kind.INTEGER:
            typed[spec.name] = column.astype(np.int64)
        else:
            # '?' means missing; 'None' (test not done) stays a category.
            typed[spec.name] = column.where(column != MISSING_TOKEN, None).astype(object)
    return pd.DataFrame(typed, index=rows.index).reset_index(drop=True)
