"""The raw-record contract: what passes, what is set aside and why, what stops everything."""

from __future__ import annotations

import pandas as pd
import pytest

from healthpredict.data.schema import FEATURE_COLUMNS, column_specs, contract_markdown
from healthpredict.data.validate import REJECTION_REASON, ContractError, validate_raw


def test_valid_extract_passes_whole_and_typed(raw_frame: pd.DataFrame) -> None:
    result = validate_raw(raw_frame)
    assert result.report.n_rejected == 0
    assert len(result.valid) == len(raw_frame)
    assert result.valid["time_in_hospital"].dtype == "int64"
    assert "a1c_result" in result.valid.columns and "A1Cresult" not in result.valid.columns
    assert "glyburide_metformin" in result.valid.columns


def test_none_stays_a_category_and_question_mark_is_missing(raw_frame: pd.DataFrame) -> None:
    raw_frame.loc[0, ["max_glu_serum", "A1Cresult", "race"]] = ["None", "None", "?"]
    valid = validate_raw(raw_frame).valid
    assert valid.loc[0, "max_glu_serum"] == "None"
    assert valid.loc[0, "a1c_result"] == "None"
    assert valid.loc[0, "race"] is None


def test_missing_column_is_named(raw_frame: pd.DataFrame) -> None:
    with pytest.raises(ContractError, match=r"missing column.*num_medications"):
        validate_raw(raw_frame.drop(columns=["num_medications"]))


def test_header_without_rows_is_refused(raw_frame: pd.DataFrame) -> None:
    with pytest.raises(ContractError, match="no rows"):
        validate_raw(raw_frame.iloc[:0])


@pytest.mark.parametrize(
    ("column", "value", "problem"),
    [
        ("time_in_hospital", "three", "not an integer"),
        ("time_in_hospital", "3.5", "not an integer"),
        ("time_in_hospital", "40", "not an integer in \\[1, 14\\]"),
        ("num_medications", "-1", "not an integer"),
        ("gender", "F", "not one of"),
        ("age", "?", "missing not allowed"),
        ("diag_1", "ABC.1", "not an ICD-9 code"),
        ("insulin", "Sometimes", "not one of"),
        ("readmitted", "YES", "not one of"),
        ("medical_specialty", "x" * 80, "longer than"),
    ],
)
def test_bad_value_sets_the_row_aside_with_reason(
    raw_frame: pd.DataFrame, column: str, value: str, problem: str
) -> None:
    raw_frame.loc[5, column] = value
    result = validate_raw(raw_frame)
    assert result.report.n_rejected == 1
    assert result.report.violations_by_column == {column: 1}
    reason = result.rejected.loc[0, REJECTION_REASON]
    assert reason.startswith(f"{column}: ")
    assert pd.Series([reason]).str.contains(problem).all()
    assert len(result.valid) == len(raw_frame) - 1


def test_row_with_several_problems_lists_each(raw_frame: pd.DataFrame) -> None:
    raw_frame.loc[3, ["gender", "age"]] = ["X", "[200-210)"]
    reason = validate_raw(raw_frame).rejected.loc[0, REJECTION_REASON]
    assert "gender:" in reason and "age:" in reason


def test_duplicate_encounter_is_set_aside(raw_frame: pd.DataFrame) -> None:
    doubled = pd.concat([raw_frame, raw_frame.iloc[[7]]], ignore_index=True)
    result = validate_raw(doubled)
    assert result.report.n_rejected == 1
    assert "duplicate" in result.rejected.loc[0, REJECTION_REASON]


def test_tolerance_turns_violations_into_an_error(raw_frame: pd.DataFrame) -> None:
    raw_frame.loc[[1, 2], "num_procedures"] = "many"
    report = validate_raw(raw_frame).report
    report.raise_if_exceeds(0.01)  # 2 of 400 rows = 0.5 %: tolerated
    with pytest.raises(ContractError, match=r"num_procedures: 2"):
        report.raise_if_exceeds(0.0)


def test_serving_records_need_no_label(raw_frame: pd.DataFrame) -> None:
    result = validate_raw(raw_frame.drop(columns=["readmitted"]), with_label=False)
    assert result.report.n_rejected == 0
    assert list(result.valid.columns[2:]) == list(FEATURE_COLUMNS)


def test_extra_columns_are_reported_not_used(raw_frame: pd.DataFrame) -> None:
    raw_frame["surprise"] = "1"
    result = validate_raw(raw_frame)
    assert result.report.extra_columns == ("surprise",)
    assert "surprise" not in result.valid.columns


def test_written_contract_lists_every_column() -> None:
    text = contract_markdown()
    for spec in column_specs(with_label=True):
        assert f"`{spec.raw_name}`" in text
