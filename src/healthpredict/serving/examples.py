"""Example encounters: one realistic record for the API docs, and random contract records.

:func:`contract_records` draws records straight from the written contract (every allowed
category, nulls, range edges, and text or ICD-9 values no model has seen). The model store
checks the fast path against the pipeline on them, and the tests and benchmark use them.
"""

from __future__ import annotations

import random
from typing import Any

from healthpredict.data.schema import COLUMNS, ID_COLUMNS, ColumnSpec, Kind

EXAMPLE_ENCOUNTER: dict[str, Any] = {
    "race": "Caucasian", "gender": "Female", "age": "[70-80)", "weight": None,
    "admission_type_id": 1, "discharge_disposition_id": 1, "admission_source_id": 7,
    "time_in_hospital": 5, "payer_code": "MC", "medical_specialty": "InternalMedicine",
    "num_lab_procedures": 52, "num_procedures": 1, "num_medications": 18,
    "number_outpatient": 0, "number_emergency": 1, "number_inpatient": 2,
    "diag_1": "428", "diag_2": "250.02", "diag_3": "403", "number_diagnoses": 9,
    "max_glu_serum": "None", "a1c_result": ">8",
    "metformin": "Steady", "repaglinide": "No", "nateglinide": "No", "chlorpropamide": "No",
    "glimepiride": "No", "acetohexamide": "No", "glipizide": "No", "glyburide": "No",
    "tolbutamide": "No", "pioglitazone": "No", "rosiglitazone": "No", "acarbose": "No",
    "miglitol": "No", "troglitazone": "No", "tolazamide": "No", "examide": "No",
    "citoglipton": "No", "insulin": "Up", "glyburide_metformin": "No",
    "glipizide_metformin": "No", "glimepiride_pioglitazone": "No",
    "metformin_rosiglitazone": "No", "metformin_pioglitazone": "No",
    "change": "Ch", "diabetes_med": "Yes",
}  # fmt: skip

_TEXT_VALUES = {
    "payer_code": ["MC", "HM", "SP", "BC", "MD", "CP", "UN", "ZZ-NEW"],
    "medical_specialty": ["InternalMedicine", "Cardiology", "Surgery-General",
                          "Family/GeneralPractice", "Emergency/Trauma", "Never-Seen-Specialty"],
}  # fmt: skip
_ICD9_VALUES = ["428", "414", "250.83", "250.02", "786", "V57", "V45.81", "E909", "8", "599",
                "403", "999.9", "1", "E800", "V01", "715.5"]  # fmt: skip
_NULL_SHARE = 0.2


def _draw(spec: ColumnSpec, rng: random.Random) -> Any:
    """One random value allowed by ``spec`` (null included when the column allows it)."""
    if spec.nullable and rng.random() < _NULL_SHARE:
        return None
    if spec.allowed is not None:
        return rng.choice(spec.allowed)
    if spec.kind is Kind.INTEGER:
        low, high = spec.minimum or 0, spec.maximum or 0
        # Range edges are where encoders and trees break first; the bulk stays realistic.
        return rng.choice(
            [low, high, rng.randint(low, min(high, low + 20)), rng.randint(low, high)]
        )
    if spec.kind is Kind.ICD9:
        if rng.random() < 0.7:
            return rng.choice(_ICD9_VALUES)
        return f"{rng.randint(1, 999)}.{rng.randint(0, 99)}"
    return rng.choice(_TEXT_VALUES.get(spec.name, ["X"]))


def contract_records(n: int, seed: int = 0, with_ids: bool = False) -> list[dict[str, Any]]:
    """``n`` random records allowed by the contract, in the API's snake_case form."""
    rng = random.Random(seed)
    specs = [s for s in COLUMNS if with_ids or s.name not in ID_COLUMNS]
    return [{spec.name: _draw(spec, rng) for spec in specs} for _ in range(n)]
