"""Small synthetic raw extracts that follow the contract, for fast tests without the real data."""

from __future__ import annotations

import numpy as np
import pandas as pd

from healthpredict.data.schema import AGE_BANDS, MEDICATIONS, column_specs

SPECIALTIES = ["InternalMedicine", "Cardiology", "Surgery-General", "Family/GeneralPractice", "?"]
DIAGNOSES = ["428", "414", "250.83", "786", "V57", "E909", "8", "599", "?"]


def make_raw_frame(n_rows: int = 400, seed: int = 0, n_patients: int | None = None) -> pd.DataFrame:
    """A raw, all-text frame with the extract's column names and a learnable 30-day signal.

    Risk rises with prior inpatient visits and length of stay, so models have something to find.
    """
    rng = np.random.default_rng(seed)
    n_patients = n_patients or max(2, int(n_rows * 0.7))
    inpatient = rng.poisson(0.6, n_rows)
    stay = rng.integers(1, 15, n_rows)
    risk = 1 / (1 + np.exp(-(-2.6 + 0.7 * inpatient + 0.08 * stay)))
    readmitted = np.where(rng.random(n_rows) < risk, "<30", rng.choice(["NO", ">30"], n_rows))
    frame = pd.DataFrame(
        {
            "encounter_id": rng.permutation(np.arange(1000, 1000 + n_rows * 7, 7))[:n_rows],
            "patient_nbr": rng.integers(1, n_patients + 1, n_rows) * 13,
            "race": rng.choice(["Caucasian", "AfricanAmerican", "Hispanic", "?"], n_rows),
            "gender": rng.choice(["Female", "Male"], n_rows),
            "age": rng.choice(AGE_BANDS[3:], n_rows),
            "weight": rng.choice(["?", "?", "?", "[75-100)"], n_rows),
            "admission_type_id": rng.integers(1, 9, n_rows),
            "discharge_disposition_id": rng.choice([1, 1, 1, 3, 6, 11], n_rows),
            "admission_source_id": rng.choice([1, 7, 7, 17], n_rows),
            "time_in_hospital": stay,
            "payer_code": rng.choice(["MC", "HM", "?"], n_rows),
            "medical_specialty": rng.choice(SPECIALTIES, n_rows),
            "num_lab_procedures": rng.integers(1, 90, n_rows),
            "num_procedures": rng.integers(0, 7, n_rows),
            "num_medications": rng.integers(1, 40, n_rows),
            "number_outpatient": rng.poisson(0.3, n_rows),
            "number_emergency": rng.poisson(0.2, n_rows),
            "number_inpatient": inpatient,
            "diag_1": rng.choice(DIAGNOSES, n_rows),
            "diag_2": rng.choice(DIAGNOSES, n_rows),
            "diag_3": rng.choice(DIAGNOSES, n_rows),
            "number_diagnoses": rng.integers(1, 10, n_rows),
            "max_glu_serum": rng.choice(["None", "None", "Norm", ">200"], n_rows),
            "A1Cresult": rng.choice(["None", "None", ">8", "Norm"], n_rows),
            **{
                drug: rng.choice(["No", "No", "No", "Steady", "Up", "Down"], n_rows)
                for drug in MEDICATIONS
            },
            "change": rng.choice(["No", "Ch"], n_rows),
            "diabetesMed": rng.choice(["No", "Yes"], n_rows),
            "readmitted": readmitted,
        }
    )
    ordered = [spec.raw_name for spec in column_specs(with_label=True)]
    return frame[ordered].astype(str)


def write_csv(frame: pd.DataFrame, path: str) -> None:
    """Write a raw frame the way the extract is written (no index, '?' as text)."""
    frame.to_csv(path, index=False)
