"""Cleaning and pseudonymisation."""

from __future__ import annotations

import stat
from pathlib import Path

import pandas as pd
import pytest

from healthpredict.data.prepare import TARGET, clean
from healthpredict.data.pseudonym import PATIENT_KEY, SEQUENCE, load_or_create_salt, pseudonymise
from healthpredict.data.validate import validate_raw
from tests.conftest import make_settings


@pytest.fixture
def valid(raw_frame: pd.DataFrame) -> pd.DataFrame:
    raw_frame.loc[0, "discharge_disposition_id"] = "11"  # expired
    raw_frame.loc[1, "discharge_disposition_id"] = "14"  # hospice
    raw_frame.loc[2, "gender"] = "Unknown/Invalid"
    raw_frame.loc[3, "readmitted"] = "<30"
    raw_frame.loc[4, "readmitted"] = ">30"
    return validate_raw(raw_frame).valid


def test_removes_death_hospice_and_invalid_gender(valid: pd.DataFrame) -> None:
    cleaned, report = clean(valid)
    assert not cleaned["discharge_disposition_id"].isin([11, 13, 14, 19, 20, 21]).any()
    assert set(cleaned["gender"]) <= {"Female", "Male"}
    assert report.n_invalid_gender == 1
    assert report.n_output == report.n_input - report.n_death_or_hospice - report.n_invalid_gender


def test_target_is_readmitted_within_30_days_only(valid: pd.DataFrame) -> None:
    cleaned, report = clean(valid)
    by_id = cleaned.set_index("encounter_id")[TARGET]
    expected = (valid.set_index("encounter_id")["readmitted"] == "<30").astype(int)
    assert (by_id == expected.loc[by_id.index]).all()
    assert "readmitted" not in cleaned.columns
    assert report.positive_rate == pytest.approx(cleaned[TARGET].mean())


def test_ordered_by_encounter_id(valid: pd.DataFrame) -> None:
    cleaned, _ = clean(valid)
    assert cleaned["encounter_id"].is_monotonic_increasing


def test_pseudonymise_removes_ids_and_keeps_order(valid: pd.DataFrame) -> None:
    cleaned, _ = clean(valid)
    result = pseudonymise(cleaned, b"salt-a")
    assert "encounter_id" not in result.columns and "patient_nbr" not in result.columns
    assert list(result[SEQUENCE]) == list(range(len(cleaned)))
    raw_ids = set(cleaned["patient_nbr"].astype(str))
    assert not raw_ids & set(result[PATIENT_KEY])
    # Same patient, same key; another salt, other keys.
    assert result[PATIENT_KEY].nunique() == cleaned["patient_nbr"].nunique()
    other = pseudonymise(cleaned, b"salt-b")
    assert not set(result[PATIENT_KEY]) & set(other[PATIENT_KEY])


def test_salt_is_generated_once_and_private(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, "unused")
    first = load_or_create_salt(settings)
    assert load_or_create_salt(settings) == first and len(first) == 64
    path = settings.data.data_dir / "secrets" / "id_salt"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_configured_salt_wins(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, "unused", id_salt="from-the-environment")
    assert load_or_create_salt(settings) == b"from-the-environment"
    assert not (settings.data.data_dir / "secrets").exists()
