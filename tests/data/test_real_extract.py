"""Data tests on the real UCI extract: the facts its README states must hold after each step."""

from __future__ import annotations

import pandas as pd
import pytest

from healthpredict.data.prepare import DEATH_OR_HOSPICE_DISPOSITIONS, TARGET, clean
from healthpredict.data.pseudonym import PATIENT_KEY
from healthpredict.data.source import RawExtract, open_raw
from healthpredict.data.timeline import INITIAL_WINDOW, grouped_folds, load_test_window, load_window
from healthpredict.data.validate import validate_raw
from healthpredict.pipelines.prepare_data import PreparationSummary
from healthpredict.settings import Settings

pytestmark = pytest.mark.real_data
CSV_SHA256 = "0689e7ec031237dc63031b938805c48377748761a3b26acab621567afa24df97"


@pytest.fixture(scope="module")
def extract(real_source: str) -> RawExtract:
    return open_raw(real_source)


def test_extract_is_the_published_file(extract: RawExtract) -> None:
    assert extract.sha256 == CSV_SHA256
    assert extract.frame.shape == (101_766, 50)


def test_every_row_meets_the_contract(extract: RawExtract) -> None:
    result = validate_raw(extract.frame)
    assert result.report.n_rejected == 0, result.report.summary()
    assert result.report.extra_columns == ()


def test_label_counts_and_none_categories_survive(extract: RawExtract) -> None:
    valid = validate_raw(extract.frame).valid
    assert valid["readmitted"].value_counts().to_dict() == {
        "NO": 54_864,
        ">30": 35_545,
        "<30": 11_357,
    }
    assert (valid["max_glu_serum"] == "None").sum() == 96_420
    assert (valid["a1c_result"] == "None").sum() == 84_748
    assert valid["race"].isna().sum() == 2_273  # '?' is missing, not a category
    assert valid["patient_nbr"].nunique() == 71_518


def test_cleaning_on_the_real_extract(extract: RawExtract) -> None:
    valid = validate_raw(extract.frame).valid
    cleaned, report = clean(valid)
    died = valid["discharge_disposition_id"].isin(DEATH_OR_HOSPICE_DISPOSITIONS).sum()
    assert report.n_death_or_hospice == died > 2_000
    assert report.n_invalid_gender == 3
    assert len(cleaned) == 101_766 - died - 3
    assert 0.11 < cleaned[TARGET].mean() < 0.12


def test_prepared_timeline(real_prepared: PreparationSummary, real_settings: Settings) -> None:
    manifest = real_prepared.manifest
    assert sum(w.rows for w in manifest.windows) == real_prepared.cleaning.n_output
    assert len(manifest.batch_names) == real_settings.data.n_batches
    initial = manifest.window(INITIAL_WINDOW)
    assert initial.rows == round(
        real_prepared.cleaning.n_output * real_settings.data.initial_window_fraction
    )
    test = load_test_window(real_settings.data.prepared_dir, manifest)
    assert len(test) == round(real_prepared.cleaning.n_output * real_settings.data.test_fraction)
    assert test["sequence"].min() > initial.last_sequence
    prepared = pd.read_parquet(real_settings.data.prepared_dir / "initial.parquet")
    assert "patient_nbr" not in prepared.columns and "encounter_id" not in prepared.columns


def test_no_patient_in_two_folds_of_the_real_training_window(
    real_prepared: PreparationSummary, real_settings: Settings
) -> None:
    train = load_window(real_settings.data.prepared_dir, real_prepared.manifest, INITIAL_WINDOW)
    folds = grouped_folds(
        train[TARGET], train[PATIENT_KEY], real_settings.training.cv_folds, seed=0
    )
    owner: dict[str, int] = {}
    for index, (_, held_out) in enumerate(folds):
        for patient in train[PATIENT_KEY].iloc[held_out].unique():
            assert owner.setdefault(patient, index) == index
    assert len(owner) == train[PATIENT_KEY].nunique()
