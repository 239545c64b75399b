"""The compiled encoder applied to a whole coded batch: no Python per record, one gather per column.

:class:`~healthpredict.serving.fastpath.encoder.RecordEncoder` holds the fitted tables (one-hot
column of each category, target encoding of each code). Here each table is applied to a
column's distinct values once and spread to the rows by their codes
(:class:`~healthpredict.data.columnar.CodedColumn`), and the derived clinical features are
computed the same way. The result is the matrix the pipeline's preprocessor produces;
:func:`healthpredict.serving.fastpath.check_parity` proves it on every model loaded.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from healthpredict.data.columnar import CodedBatch
from healthpredict.data.schema import MEDICATION_COLUMNS
from healthpredict.features import (
    DIAGNOSIS_COLUMNS,
    NUMERIC_FEATURES,
    UTILISATION_COLUMNS,
    icd9_group,
)
from healthpredict.serving.fastpath.encoder import (
    AGE_YEARS,
    Lookup,
    RecordEncoder,
    as_text,
    code_prefix,
)

# Encoder inputs derived from one contract field: (the field, the derivation).
_DERIVED: dict[str, tuple[str, Callable[[object], str]]] = {
    **{f"{d}_group": (d, icd9_group) for d in DIAGNOSIS_COLUMNS},
    **{f"{d}_code": (d, code_prefix) for d in DIAGNOSIS_COLUMNS},
}


def encode_batch(encoder: RecordEncoder, batch: CodedBatch) -> np.ndarray:
    """The float64 feature matrix of ``batch`` (checked against the contract), one row per row."""
    matrix = np.zeros((batch.n_rows, len(encoder.feature_names)))
    numeric = numeric_features(batch)
    start = encoder.numeric_start
    for offset, name in enumerate(NUMERIC_FEATURES):
        matrix[:, start + offset] = numeric[name]
    rows = np.arange(batch.n_rows)
    for lookup in encoder.one_hot:
        columns = _looked_up(lookup, batch)
        hit = columns >= 0
        matrix[rows[hit], columns[hit].astype(np.intp)] = 1.0
    for position, lookup in zip(encoder.target_positions, encoder.target, strict=True):
        matrix[:, position] = _looked_up(lookup, batch)
    return matrix


def _looked_up(lookup: Lookup, batch: CodedBatch) -> np.ndarray:
    """Per row, the fitted table's entry for the row's (derived) text."""
    field, derive = _DERIVED.get(lookup.source, (lookup.source, as_text))
    get, default = lookup.table.get, lookup.default
    return batch[field].map(lambda value: get(derive(value), default))


def numeric_features(batch: CodedBatch) -> dict[str, np.ndarray]:
    """The passthrough numeric features, as
    :func:`~healthpredict.serving.fastpath.encoder.numeric_features` computes them for a record.
    """
    meds = [batch[m] for m in MEDICATION_COLUMNS]
    up = np.sum([m.map(lambda v: v == "Up") for m in meds], axis=0)
    down = np.sum([m.map(lambda v: v == "Down") for m in meds], axis=0)
    utilisation = [batch[c].map(float) for c in UTILISATION_COLUMNS]  # type: ignore[arg-type]
    derived = {
        "age_years": batch["age"].map(lambda v: AGE_YEARS.get(v, np.nan)),  # type: ignore[call-overload]
        "prior_visits": np.sum(utilisation, axis=0),
        "meds_active": np.sum([m.map(lambda v: v != "No") for m in meds], axis=0),
        "meds_changed": up + down,
        "meds_up": up,
        "meds_down": down,
        "diabetes_diagnoses": np.sum(
            [batch[d].map(lambda v: icd9_group(v) == "diabetes") for d in DIAGNOSIS_COLUMNS], axis=0
        ),
        "weight_recorded": batch["weight"].map(lambda v: v is not None),
    }
    return {n: derived[n] if n in derived else batch[n].map(float) for n in NUMERIC_FEATURES}  # type: ignore[arg-type]
