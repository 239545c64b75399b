"""The fitted preprocessor compiled into a plain dict -> numpy encoder (the fast path's half).

The one-hot and target-encoding tables are read out of the *fitted* transformers by probing
them with every fitted category and one unseen value, rather than by re-deriving their rules.
The derived clinical features of :class:`healthpredict.features.EncounterFeatures` are
computed again here in plain Python; :func:`healthpredict.serving.fastpath.check_parity`
proves the two agree, on every model the service loads.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.pipeline import Pipeline

from healthpredict.data.schema import AGE_BANDS, MEDICATION_COLUMNS
from healthpredict.errors import HealthPredictError
from healthpredict.features import (
    DIAGNOSIS_COLUMNS,
    MISSING_CATEGORY,
    NUMERIC_FEATURES,
    UTILISATION_COLUMNS,
    icd9_group,
)

Record = Mapping[str, object]
_UNSEEN = "\x00unseen-category"
AGE_YEARS = {band: i * 10.0 + 5.0 for i, band in enumerate(AGE_BANDS)}


class FastPathError(HealthPredictError):
    """The pipeline does not have the shape the fast path knows how to compile."""


@dataclass(frozen=True)
class Lookup:
    """One text column's fitted encoding: value -> output column (one-hot) or value (target)."""

    source: str
    table: dict[str, float]
    default: float


def as_text(value: object) -> str:
    """Mirror of ``features.as_text`` for one value."""
    return MISSING_CATEGORY if value is None else str(value)


def code_prefix(value: object) -> str:
    """Mirror of the ``diag_N_code`` derivation: 3-character ICD-9 prefix."""
    return MISSING_CATEGORY if value is None else str(value).split(".")[0]


_GROUPS = {f"{d}_group": d for d in DIAGNOSIS_COLUMNS}
_CODES = {f"{d}_code": d for d in DIAGNOSIS_COLUMNS}


def _derived_text(record: Record, column: str) -> str:
    """Text of an input column of the encoders, derived from the record where needed."""
    if column in _GROUPS:
        return icd9_group(record[_GROUPS[column]])
    if column in _CODES:
        return code_prefix(record[_CODES[column]])
    return as_text(record[column])


def numeric_features(record: Record) -> list[float]:
    """The passthrough numeric features of one record, in ``NUMERIC_FEATURES`` order."""
    meds = [record[m] for m in MEDICATION_COLUMNS]
    up, down = meds.count("Up"), meds.count("Down")
    utilisation = [float(record[c]) for c in UTILISATION_COLUMNS]  # type: ignore[arg-type]
    diabetes = sum(icd9_group(record[c]) == "diabetes" for c in DIAGNOSIS_COLUMNS)
    values = {
        "age_years": AGE_YEARS.get(record["age"], np.nan),  # type: ignore[call-overload]
        "prior_visits": sum(utilisation),
        "meds_active": float(len(meds) - meds.count("No")),
        "meds_changed": float(up + down),
        "meds_up": float(up),
        "meds_down": float(down),
        "diabetes_diagnoses": float(diabetes),
        "weight_recorded": 0.0 if record["weight"] is None else 1.0,
    }
    return [values[n] if n in values else float(record[n]) for n in NUMERIC_FEATURES]  # type: ignore[arg-type]


def _probe(encoder: object, categories: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Transform, column by column, every fitted category plus one unseen value.

    Returns, per input column, the block of output rows (categories..., unseen).
    """
    width = max(len(c) for c in categories) + 1
    base = [str(c[0]) for c in categories]
    blocks = []
    for i, cats in enumerate(categories):
        rows = np.array([base] * width, dtype=object)
        rows[: len(cats), i] = [str(c) for c in cats]
        rows[len(cats) :, i] = _UNSEEN
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unseen values warn by design here
            out = np.asarray(encoder.transform(rows))  # type: ignore[attr-defined]
        blocks.append(out[: len(cats) + 1])
    return blocks


def _one_hot_lookups(one_hot: object, columns: Sequence[str], offset: int) -> list[Lookup]:
    """Map each value to the absolute index of its one-hot column (-1: all zeros)."""
    categories = one_hot.categories_  # type: ignore[attr-defined]
    sizes = list(one_hot._n_features_outs)  # type: ignore[attr-defined]
    starts = np.cumsum([0, *sizes])
    lookups = []
    for i, (column, cats, block) in enumerate(
        zip(columns, categories, _probe(one_hot, categories), strict=True)
    ):
        local = np.asarray(block)[:, starts[i] : starts[i + 1]]
        if not np.isin(local, (0.0, 1.0)).all() or (local.sum(axis=1) > 1).any():
            raise FastPathError(f"one-hot block of {column!r} is not one-hot")
        index = [float(offset + starts[i] + r.argmax()) if r.any() else -1.0 for r in local]
        lookups.append(
            Lookup(column, dict(zip(map(str, cats), index[:-1], strict=True)), index[-1])
        )
    return lookups


def _target_lookups(target: object, columns: Sequence[str]) -> list[Lookup]:
    """Map each value to its fitted target encoding (unseen: the learned default)."""
    categories = target.categories_  # type: ignore[attr-defined]
    lookups = []
    for i, (column, cats, block) in enumerate(
        zip(columns, categories, _probe(target, categories), strict=True)
    ):
        values = np.asarray(block)[:, i]
        lookups.append(
            Lookup(
                column,
                dict(zip(map(str, cats), values[:-1].tolist(), strict=True)),
                float(values[-1]),
            )
        )
    return lookups


@dataclass(frozen=True)
class RecordEncoder:
    """Encodes contract records (snake_case dicts) into the pipeline's feature matrix."""

    feature_names: tuple[str, ...]
    numeric_start: int
    one_hot: tuple[Lookup, ...]
    target: tuple[Lookup, ...]
    target_positions: tuple[int, ...]

    def encode(self, records: Sequence[Record]) -> np.ndarray:
        """Return the float64 feature matrix of ``records``, one row per record."""
        if len(records) == 1:
            return self.encode_one(records[0])[np.newaxis, :]
        n = len(records)
        matrix = np.zeros((n, len(self.feature_names)))
        stop = self.numeric_start + len(NUMERIC_FEATURES)
        matrix[:, self.numeric_start : stop] = [numeric_features(r) for r in records]
        rows = np.arange(n)
        for lookup in self.one_hot:
            get, default, source = lookup.table.get, lookup.default, lookup.source
            columns = np.array([get(_derived_text(r, source), default) for r in records])
            hit = columns >= 0
            matrix[rows[hit], columns[hit].astype(np.intp)] = 1.0
        for position, lookup in zip(self.target_positions, self.target, strict=True):
            get, default, source = lookup.table.get, lookup.default, lookup.source
            matrix[:, position] = [get(_derived_text(r, source), default) for r in records]
        return matrix

    def encode_one(self, record: Record) -> np.ndarray:
        """One record's feature row; plain lists, since numpy calls cost more than they save."""
        row = [0.0] * len(self.feature_names)
        start = self.numeric_start
        row[start : start + len(NUMERIC_FEATURES)] = numeric_features(record)
        for lookup in self.one_hot:
            column = lookup.table.get(_derived_text(record, lookup.source), lookup.default)
            if column >= 0:
                row[int(column)] = 1.0
        for position, lookup in zip(self.target_positions, self.target, strict=True):
            row[position] = lookup.table.get(_derived_text(record, lookup.source), lookup.default)
        return np.array(row)

    def source_of(self, feature: str) -> str:
        """The request field (or derived quantity) an output feature comes from."""
        for lookup in self.one_hot:
            if feature.startswith(lookup.source + "_"):
                return _source_field(lookup.source)
        return _source_field(feature)


def _source_field(column: str) -> str:
    """Fold single-field derivations back onto the field a clinician recognises."""
    if column in ("age_years", "weight_recorded"):
        return column.split("_")[0]
    for diagnosis in DIAGNOSIS_COLUMNS:
        if column in (f"{diagnosis}_group", f"{diagnosis}_code"):
            return diagnosis
    return column


def compile_encoder(preprocessor: Pipeline) -> RecordEncoder:
    """Compile the fitted ``build_preprocessor()`` pipeline into a :class:`RecordEncoder`.

    Raises:
        FastPathError: The preprocessor has a shape this compiler does not know.
    """
    steps = dict(preprocessor.named_steps) if isinstance(preprocessor, Pipeline) else {}
    encode = steps.get("encode")
    if type(steps.get("derive")).__name__ != "EncounterFeatures" or encode is None:
        raise FastPathError(
            "expected Pipeline([derive=EncounterFeatures, encode=ColumnTransformer])"
        )
    names = tuple(str(n) for n in encode.get_feature_names_out())
    numeric: int | None = None
    one_hot: tuple[Lookup, ...] = ()
    target: tuple[Lookup, ...] = ()
    positions: tuple[int, ...] = ()
    for name, transformer, columns in encode.transformers_:
        start = encode.output_indices_[name].start
        if name == "remainder":
            continue
        if (
            name == "numeric"
            and _is_passthrough(transformer)
            and tuple(columns) == NUMERIC_FEATURES
        ):
            numeric = start
        elif name == "categories":
            one_hot = tuple(_one_hot_lookups(transformer[-1], list(columns), start))
        elif name == "codes":
            target = tuple(_target_lookups(transformer[-1], list(columns)))
            positions = tuple(range(start, start + len(columns)))
        else:
            raise FastPathError(f"unsupported encoder block {name!r}")
    if numeric is None or not one_hot or not target:
        raise FastPathError("expected numeric passthrough, one-hot and target-encoded blocks")
    return RecordEncoder(names, numeric, one_hot, target, positions)


def _is_passthrough(transformer: object) -> bool:
    if transformer == "passthrough":
        return True
    return (
        type(transformer).__name__ == "FunctionTransformer"
        and getattr(transformer, "func", 1) is None
    )
