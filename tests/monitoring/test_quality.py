"""Quarantine for batches that cannot be trusted; a few bad rows are set aside instead."""

from __future__ import annotations

import pandas as pd

from healthpredict.monitoring.quality import check_batch


def test_a_clean_batch_passes(batch: pd.DataFrame) -> None:
    result = check_batch(batch, 0.01)
    assert not result.quarantined and result.n_invalid == 0


def test_missing_column_quarantines(batch: pd.DataFrame) -> None:
    result = check_batch(batch.drop(columns=["age"]), 0.01)
    assert result.quarantined and "missing column(s): age" in str(result.quarantine_reason)


def test_all_null_column_quarantines(batch: pd.DataFrame) -> None:
    result = check_batch(batch.assign(insulin=None), 0.01)
    assert result.quarantined and "no values at all: insulin" in str(result.quarantine_reason)


def test_wrong_type_quarantines(batch: pd.DataFrame) -> None:
    result = check_batch(batch.assign(num_medications=batch["num_medications"] + 0.5), 0.01)
    assert result.quarantined and "not integer" in str(result.quarantine_reason)


def test_empty_batch_quarantines(batch: pd.DataFrame) -> None:
    assert check_batch(batch.iloc[:0], 0.01).quarantined


def test_few_bad_rows_are_set_aside_many_quarantine(batch: pd.DataFrame) -> None:
    few = batch.copy()
    few.loc[:4, "age"] = "[100-110)"
    result = check_batch(few, 0.01)
    assert not result.quarantined and result.n_invalid == 5
    assert result.violations_by_column == {"age": 5}
    many = batch.copy()
    many.loc[: len(batch) // 10, "time_in_hospital"] = 48
    result = check_batch(many, 0.01)
    assert result.quarantined and "time_in_hospital" in str(result.quarantine_reason)
