"""Encounter batches as coded columns, checked against the contract one distinct value at a time.

A batch of encounters repeats few values per column: 47 contract fields, most with fewer than
a hundred distinct values, the ICD-9 codes with about a thousand. A :class:`CodedColumn` holds
a column as its distinct values plus one small integer per row (Arrow's dictionary encoding),
so that checking the contract, deriving features and looking up encodings cost one Python call
per distinct value and one numpy gather per column, whatever the number of rows.

:func:`code_batch` codes an Arrow table or a pandas frame in either naming of the contract (the
extract's, e.g. ``A1Cresult``, or the API's snake_case) and with either form of missing (null,
an empty cell, or the extract's ``?``). :func:`check_batch` applies the contract's own column
rules (:func:`healthpredict.data.validate.check_column`) to the distinct values and gives each
row that breaks them its reason, in the words ``healthpredict data validate`` uses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from healthpredict.data.schema import (
    COLUMNS,
    FEATURE_COLUMNS,
    MISSING_TOKEN,
    RAW_TO_NAME,
    ColumnSpec,
    Kind,
)
from healthpredict.data.validate import ContractError, check_column

SPECS: dict[str, ColumnSpec] = {spec.name: spec for spec in COLUMNS}
_MISSING_TEXT = ("", MISSING_TOKEN)  # what a CSV cell or the extract writes for "no value"


@dataclass(frozen=True)
class CodedColumn:
    """One column: its distinct values (None = missing) and, per row, the index of its value."""

    codes: np.ndarray
    values: tuple[object, ...]
    # The values as int64 when the column came as integers without nulls (typed Parquet): its
    # range check is then one numpy comparison, however many distinct values (e.g. the ids).
    integers: np.ndarray | None = None

    def take(self, per_value: np.ndarray) -> np.ndarray:
        """Per row, the entry of ``per_value`` (one entry per distinct value) for its value."""
        return per_value[self.codes]

    def map(self, function: Callable[[object], object], dtype: type = float) -> np.ndarray:
        """Per row, ``function`` of its value, calling ``function`` once per distinct value."""
        return self.take(np.array([function(v) for v in self.values], dtype=dtype))

    def rows(self) -> list[object]:
        """The plain values, one per row (for the few rows that need them, e.g. reasons)."""
        return [self.values[code] for code in self.codes.tolist()]


@dataclass(frozen=True)
class CodedBatch:
    """A batch of encounters as coded contract columns, with the columns it did not know."""

    columns: Mapping[str, CodedColumn]
    n_rows: int
    extra_columns: tuple[str, ...] = ()

    def __getitem__(self, name: str) -> CodedColumn:
        return self.columns[name]

    def select(self, rows: np.ndarray) -> CodedBatch:
        """The batch restricted to ``rows`` (positions or a boolean mask); values are shared."""
        columns = {
            n: CodedColumn(c.codes[rows], c.values, c.integers) for n, c in self.columns.items()
        }
        count = int(rows.sum()) if rows.dtype == bool else len(rows)
        return CodedBatch(columns, count, self.extra_columns)

    def frame(self, names: Iterable[str]) -> pd.DataFrame:
        """The named columns as the pipeline takes them: integers as int64, text as objects
        (missing: None)."""
        return pd.DataFrame({n: _series(self.columns[n], SPECS[n]) for n in names})


def _series(column: CodedColumn, spec: ColumnSpec) -> pd.Series:
    values = pd.Series(column.rows(), dtype=object)
    return values.astype(np.int64) if spec.kind is Kind.INTEGER else values


def code_batch(batch: pa.Table | pd.DataFrame, required: Iterable[str]) -> CodedBatch:
    """Code every contract column of ``batch``; the ``required`` ones must be there.

    Raises:
        ContractError: A required column is missing (named in either naming of the contract).
    """
    table = (
        batch if isinstance(batch, pa.Table) else pa.Table.from_pandas(batch, preserve_index=False)
    )
    names = {RAW_TO_NAME.get(name, name): name for name in table.column_names}
    missing = [name for name in required if name not in names]
    if missing:
        raise ContractError(f"missing column(s): {', '.join(missing)}")
    columns = {name: _coded(table.column(names[name])) for name in SPECS if name in names}
    extra = tuple(original for name, original in names.items() if name not in SPECS)
    return CodedBatch(columns, table.num_rows, extra)


def _coded(column: pa.ChunkedArray) -> CodedColumn:
    """Arrow's dictionary encoding, nulls and the missing tokens folded into one None value."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    encoded = pc.dictionary_encode(column.combine_chunks(), null_encoding="encode")
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.intp, copy=False)
    if pa.types.is_integer(column.type) and column.null_count == 0:
        integers = encoded.dictionary.to_numpy().astype(np.int64, copy=False)
        return CodedColumn(codes, tuple(integers.tolist()), integers)
    values = [None if v in _MISSING_TEXT else v for v in encoded.dictionary.to_pylist()]
    return _merged(codes, values)


def _merged(codes: np.ndarray, values: list[object]) -> CodedColumn:
    """One code per distinct value: nulls, '' and '?' all become the one None value."""
    distinct = list(dict.fromkeys(values))
    if len(distinct) == len(values):
        return CodedColumn(codes, tuple(values))
    position = {value: i for i, value in enumerate(distinct)}
    remap = np.array([position[v] for v in values], dtype=np.intp)
    return CodedColumn(remap[codes], tuple(distinct))


@dataclass(frozen=True)
class CheckedBatch:
    """The rows that keep to the contract, typed; the others with their reasons."""

    valid: CodedBatch
    rejected_rows: np.ndarray
    reasons: list[str]
    violations_by_column: dict[str, int]


def check_batch(batch: CodedBatch, seen_ids: set[object] | None = None) -> CheckedBatch:
    """Apply each contract column's rule to its distinct values; type the values that pass.

    Integer columns become ``int`` values, text columns ``str``; missing stays None. With
    ``seen_ids`` (the encounter ids of earlier batches of the same input, updated here), an
    encounter id already seen is rejected as a duplicate, as ``data validate`` does.
    """
    problems: list[tuple[np.ndarray, str, str | None]] = []
    typed: dict[str, CodedColumn] = {}
    for name, column in batch.columns.items():
        bad_value, typed_values = _verdicts(SPECS[name], column)
        bad = column.take(bad_value)
        if bad.any():
            problems.append((bad, f"{name}: {_problem(SPECS[name], column.values)}", name))
        typed[name] = CodedColumn(column.codes, typed_values, column.integers)
    if seen_ids is not None and "encounter_id" in typed:
        duplicate = _duplicates(typed["encounter_id"], seen_ids)
        if duplicate.any():
            problems.append((duplicate, "encounter_id: duplicate of an earlier row", None))
    keep = ~np.logical_or.reduce([bad for bad, _, _ in problems], initial=False)
    keep = np.broadcast_to(keep, batch.n_rows)
    broken = {name for _, _, name in problems}
    # A value that broke a rule is held by rejected rows only: what reads the valid rows
    # (derivations, encoders) must never meet it.
    valid = {
        name: _compacted(column.codes[keep], column.values)
        if name in broken
        else CodedColumn(column.codes[keep], column.values, column.integers)
        for name, column in typed.items()
    }
    rejected = np.flatnonzero(~keep)
    violations = {name or "encounter_id (duplicate)": int(bad.sum()) for bad, _, name in problems}
    return CheckedBatch(
        CodedBatch(valid, int(keep.sum()), batch.extra_columns),
        rejected,
        _reasons(rejected, problems, batch),
        violations,
    )


def contract_batch(rows: pa.Table | pd.DataFrame | Sequence[Mapping[str, object]]) -> CodedBatch:
    """Rows already held to the contract (API requests, prepared data) as a checked batch.

    Raises:
        ContractError: A row breaks the contract after all (the first reason is named).
    """
    table = rows if isinstance(rows, pa.Table | pd.DataFrame) else pa.Table.from_pylist(list(rows))
    checked = check_batch(code_batch(table, FEATURE_COLUMNS))
    if len(checked.rejected_rows):
        raise ContractError(f"row {checked.rejected_rows[0]}: {checked.reasons[0]}")
    return checked.valid


def _compacted(codes: np.ndarray, values: tuple[object, ...]) -> CodedColumn:
    """A column holding only the values its rows hold."""
    used, inverse = np.unique(codes, return_inverse=True)
    return CodedColumn(inverse.astype(np.intp), tuple(values[i] for i in used.tolist()))


def _duplicates(ids: CodedColumn, seen: set[object]) -> np.ndarray:
    """Rows whose (present) id came earlier in this batch or in an earlier one; ``seen`` grows."""
    later = np.ones(len(ids.codes), dtype=bool)
    later[np.unique(ids.codes, return_index=True)[1]] = False
    earlier = np.array([value in seen for value in ids.values], dtype=bool)
    present = np.array([value is not None for value in ids.values], dtype=bool)
    seen.update(value for value in ids.values if value is not None)
    return (later | ids.take(earlier)) & ids.take(present)


def _text(value: object) -> str:
    """A value as the extract would write it (floats that are whole numbers as integers)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# Per column, the verdict on each value met so far: (breaks the rule, the value typed). Requests
# and batches repeat the same values, so most batches are checked by dictionary look-ups only.
# Columns of (nearly) unique values stop being remembered at the limit.
_VERDICTS: dict[str, dict[object, tuple[bool, object]]] = {}
_REMEMBERED_PER_COLUMN = 20_000


def _verdicts(spec: ColumnSpec, column: CodedColumn) -> tuple[np.ndarray, tuple[object, ...]]:
    """Per distinct value, whether it breaks ``spec`` and its typed form (as it came if broken)."""
    if column.integers is not None and spec.kind is Kind.INTEGER:
        outside = (column.integers < (spec.minimum or 0)) | (column.integers > (spec.maximum or 0))
        return outside, column.values
    values = column.values
    known = _VERDICTS.setdefault(spec.name, {})
    unknown = [v for v in values if v not in known]
    if unknown:
        text = pd.Series([MISSING_TOKEN if v is None else _text(v) for v in unknown], dtype=str)
        bad, _ = check_column(text, spec)
        typed = int if spec.kind is Kind.INTEGER else str
        found = {
            v: (flagged, v if flagged or v is None else typed(_text(v)))
            for v, flagged in zip(unknown, bad.tolist(), strict=True)
        }
        if len(known) < _REMEMBERED_PER_COLUMN:
            known.update(found)
    else:
        found = {}
    verdicts = [known.get(v) or found[v] for v in values]
    return np.array([b for b, _ in verdicts], dtype=bool), tuple(t for _, t in verdicts)


def _problem(spec: ColumnSpec, values: tuple[object, ...]) -> str:
    """The rule a column's values break, in words (the rare path: only when some do)."""
    text = pd.Series([MISSING_TOKEN if v is None else _text(v) for v in values], dtype=str)
    return check_column(text, spec)[1]


def _reasons(
    rejected: np.ndarray, problems: list[tuple[np.ndarray, str, str | None]], batch: CodedBatch
) -> list[str]:
    """Per rejected row, every rule it breaks with the offending value (first 40 characters)."""
    parts: list[list[str]] = [[] for _ in rejected]
    for bad, problem, name in problems:
        for slot in np.flatnonzero(bad[rejected]).tolist():
            if name is None:
                parts[slot].append(problem)
                continue
            value = batch[name].values[batch[name].codes[rejected[slot]]]
            shown = MISSING_TOKEN if value is None else _text(value)[:40]
            parts[slot].append(f"{problem} ({shown})")
    return ["; ".join(p) for p in parts]
