"""The one preprocessor: derived features, unseen categories, and the ICD-9 grouping."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import sklearn

from healthpredict.data.prepare import TARGET, clean
from healthpredict.data.pseudonym import PATIENT_KEY, pseudonymise
from healthpredict.data.timeline import patient_groups
from healthpredict.data.validate import validate_raw
from healthpredict.features import EncounterFeatures, build_preprocessor, icd9_group
from healthpredict.modeling.train import features_of
from tests.synthetic import make_raw_frame


@pytest.fixture
def prepared() -> pd.DataFrame:
    cleaned, _ = clean(validate_raw(make_raw_frame(600, seed=5)).valid)
    return pseudonymise(cleaned, b"salt")


@pytest.mark.parametrize(
    ("code", "group"),
    [
        ("250.83", "diabetes"),
        ("250", "diabetes"),
        ("428", "circulatory"),
        ("785", "circulatory"),
        ("486", "respiratory"),
        ("8", "infectious"),
        ("V57", "external_or_supplementary"),
        ("E909", "external_or_supplementary"),
        ("820.1", "injury"),
        ("174", "neoplasms"),
        ("296", "mental"),
        ("780", "other"),
        (None, "missing"),
    ],
)
def test_icd9_groups(code: str | None, group: str) -> None:
    assert icd9_group(code) == group


def test_derived_features(prepared: pd.DataFrame) -> None:
    row = features_of(prepared).head(1).copy()
    row[["insulin", "metformin", "glipizide"]] = ["Up", "Down", "Steady"]
    row[["number_outpatient", "number_emergency", "number_inpatient"]] = [1, 2, 3]
    row["age"] = "[70-80)"
    derived = EncounterFeatures().transform(row).iloc[0]
    assert derived["age_years"] == 75
    assert derived["prior_visits"] == 6
    assert derived["meds_up"] >= 1 and derived["meds_down"] >= 1
    assert derived["meds_changed"] == derived["meds_up"] + derived["meds_down"]


def _fit(prepared: pd.DataFrame, linear: bool = False) -> sklearn.pipeline.Pipeline:
    preprocessor = build_preprocessor(linear=linear, min_category_count=5)
    with sklearn.config_context(enable_metadata_routing=True):
        preprocessor.fit(
            features_of(prepared), prepared[TARGET], groups=patient_groups(prepared[PATIENT_KEY])
        )
    return preprocessor


@pytest.mark.parametrize("linear", [False, True])
def test_unseen_and_missing_values_encode_without_error(
    prepared: pd.DataFrame, linear: bool
) -> None:
    preprocessor = _fit(prepared, linear)
    novel = features_of(prepared).head(3).copy()
    novel["medical_specialty"] = ["Astrology", None, "Cardiology"]
    novel["payer_code"] = ["ZZ", None, "MC"]
    novel["diag_1"] = ["999.99", None, "V99"]
    novel["admission_source_id"] = [99, 7, 1]
    novel["race"] = [None, "Martian", "Asian"]
    encoded = preprocessor.transform(novel)
    assert encoded.shape == (3, preprocessor.transform(features_of(prepared).head(1)).shape[1])
    assert np.isfinite(encoded.to_numpy(dtype=float)).all()


def test_output_is_numeric_with_names(prepared: pd.DataFrame) -> None:
    encoded = _fit(prepared).transform(features_of(prepared))
    assert encoded.columns.is_unique and "age_years" in encoded.columns
    assert all(np.issubdtype(dtype, np.number) for dtype in encoded.dtypes)
    assert not any(c in encoded.columns for c in ("encounter_key", PATIENT_KEY, TARGET))
