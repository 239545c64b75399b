"""The one and only preprocessing of Health Predict.

:func:`build_preprocessor` returns an unfitted scikit-learn transformer that turns raw encounter
records (the contract's snake_case columns) into model features. It is always fitted inside one
``Pipeline`` with the model and saved with it, so training, evaluation and serving encode a
record in exactly the same way.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler, TargetEncoder

from healthpredict.data.schema import AGE_BANDS, MEDICATION_COLUMNS

MISSING_CATEGORY = "missing"
DIAGNOSIS_COLUMNS = ("diag_1", "diag_2", "diag_3")
UTILISATION_COLUMNS = ("number_outpatient", "number_emergency", "number_inpatient")

# ICD-9 chapters used in the readmission literature (Strack et al. 2014), by 3-digit code.
_ICD9_GROUPS: tuple[tuple[str, tuple[tuple[int, int], ...]], ...] = (
    ("circulatory", ((390, 459), (785, 785))),
    ("respiratory", ((460, 519), (786, 786))),
    ("digestive", ((520, 579), (787, 787))),
    ("injury", ((800, 999),)),
    ("musculoskeletal", ((710, 739),)),
    ("genitourinary", ((580, 629), (788, 788))),
    ("neoplasms", ((140, 239),)),
    ("endocrine_other", ((240, 249), (251, 279))),
    ("mental", ((290, 319),)),
    ("infectious", ((1, 139),)),
)
NUMERIC_FEATURES = (
    "age_years",
    "time_in_hospital",
    "num_lab_procedures",
    "num_procedures",
    "num_medications",
    *UTILISATION_COLUMNS,
    "number_diagnoses",
    "prior_visits",
    "meds_active",
    "meds_changed",
    "meds_up",
    "meds_down",
    "diabetes_diagnoses",
    "weight_recorded",
)
LOW_CARDINALITY = (
    "race",
    "gender",
    "admission_type_id",
    "discharge_disposition_id",
    "admission_source_id",
    "payer_code",
    "max_glu_serum",
    "a1c_result",
    "change",
    "diabetes_med",
    "insulin",
    "metformin",
    "diag_1_group",
    "diag_2_group",
    "diag_3_group",
)
HIGH_CARDINALITY = ("medical_specialty", "diag_1_code", "diag_2_code", "diag_3_code")


def icd9_group(code: object) -> str:
    """Map one ICD-9 code to a clinical category (``diabetes`` for 250.xx)."""
    if not isinstance(code, str) or not code:
        return MISSING_CATEGORY
    if code[0] in "VE":
        return "external_or_supplementary"
    number = int(float(code))
    if number == 250:
        return "diabetes"
    for group, ranges in _ICD9_GROUPS:
        if any(low <= number <= high for low, high in ranges):
            return group
    return "other"


class EncounterFeatures(TransformerMixin, BaseEstimator):
    """Derive clinical features from raw encounter columns (stateless, so fit learns nothing)."""

    def fit(self, frame: pd.DataFrame, target: object = None) -> EncounterFeatures:
        """Nothing to learn; present for the scikit-learn API."""
        return self

    def transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Return the raw columns plus the derived ones."""
        out = frame.copy()
        age_index = {band: i for i, band in enumerate(AGE_BANDS)}
        out["age_years"] = frame["age"].map(age_index).astype(float) * 10 + 5
        out["weight_recorded"] = frame["weight"].notna().astype(float)
        meds = frame[list(MEDICATION_COLUMNS)]
        out["meds_active"] = (meds != "No").sum(axis=1).astype(float)
        out["meds_up"] = (meds == "Up").sum(axis=1).astype(float)
        out["meds_down"] = (meds == "Down").sum(axis=1).astype(float)
        out["meds_changed"] = out["meds_up"] + out["meds_down"]
        out["prior_visits"] = frame[list(UTILISATION_COLUMNS)].sum(axis=1).astype(float)
        diabetes = np.zeros(len(frame))
        for column in DIAGNOSIS_COLUMNS:
            codes = frame[column]
            out[f"{column}_group"] = codes.map(icd9_group)
            # The 3-character prefix keeps the clinical detail at a tractable cardinality.
            out[f"{column}_code"] = codes.fillna(MISSING_CATEGORY).astype(str).str.split(".").str[0]
            diabetes += (out[f"{column}_group"] == "diabetes").to_numpy()
        out["diabetes_diagnoses"] = diabetes
        return out


def _as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Categorical inputs as text with an explicit missing category (ids included)."""
    return frame.astype(object).where(frame.notna(), MISSING_CATEGORY).astype(str)


def build_preprocessor(linear: bool = False, min_category_count: int = 20) -> Pipeline:
    """Build the unfitted preprocessing for raw encounter records.

    Args:
        linear: Scale numbers for a linear model; trees take them as they are.
        min_category_count: Categories rarer than this in training are pooled as infrequent.
            Unseen categories at prediction time fall into that pool too, without error.

    Returns:
        A transformer from the raw contract columns to a numeric feature frame.
    """
    text = FunctionTransformer(_as_text, feature_names_out="one-to-one")
    one_hot = OneHotEncoder(
        handle_unknown="infrequent_if_exist", min_frequency=min_category_count, sparse_output=False
    )
    # Cross-fitted target encoding: high-cardinality codes carry signal one-hot would dilute.
    # Its folds are patient-grouped (fit with groups=patient keys through metadata routing).
    target = TargetEncoder(target_type="binary", cv=GroupKFold(5, shuffle=True, random_state=0))
    numeric: object = StandardScaler() if linear else "passthrough"
    encode = ColumnTransformer(
        [
            ("numeric", numeric, list(NUMERIC_FEATURES)),
            ("categories", Pipeline([("text", text), ("one_hot", one_hot)]), list(LOW_CARDINALITY)),
            ("codes", Pipeline([("text", text), ("target", target)]), list(HIGH_CARDINALITY)),
        ],
        remainder="drop",
        verbose_feature_names_out=False,
    )
    # Pandas output keeps feature names all the way to the model (importance, contributions).
    encode.set_output(transform="pandas")
    return Pipeline([("derive", EncounterFeatures()), ("encode", encode)])
