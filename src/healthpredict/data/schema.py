"""The written contract for one raw encounter record of the UCI diabetes extract.

Every column of ``diabetic_data.csv`` is described once here: its name in the extract, the
snake_case name used everywhere else in Health Predict, its kind, and what values it may hold.
Missing values are written ``?`` in the extract; the string ``None`` in ``max_glu_serum`` and
``A1Cresult`` means "test not done" and is a real category, never a missing value.

Ranges are plausibility bounds, wider than what the 1999-2008 extract shows, so that a new
extract from a real hospital is not rejected for an unusual but possible stay.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    """How a column's text is interpreted."""

    INTEGER = "integer"
    CATEGORY = "category"
    TEXT = "text"
    ICD9 = "icd9"


MISSING_TOKEN = "?"
ICD9_PATTERN = re.compile(
    r"^(?:\d{1,3}(?:\.\d{1,2})?|V\d{1,2}(?:\.\d{1,2})?|E\d{3}(?:\.\d{1,2})?)$"
)
MEDICATION_STATES = ("No", "Steady", "Up", "Down")
AGE_BANDS = tuple(f"[{lo}-{lo + 10})" for lo in range(0, 100, 10))
WEIGHT_BANDS = (*tuple(f"[{lo}-{lo + 25})" for lo in range(0, 200, 25)), ">200")


@dataclass(frozen=True)
class ColumnSpec:
    """The contract of one column."""

    raw_name: str
    name: str
    kind: Kind
    nullable: bool = False
    allowed: tuple[str, ...] | None = None
    minimum: int | None = None
    maximum: int | None = None
    max_length: int | None = None
    description: str = ""
    coded: bool = False  # an integer naming a category (IDs_mapping.csv), not a quantity

    def rule(self) -> str:
        """Return the rule in words, for the printed contract."""
        if self.allowed is not None:
            rule = "one of " + ", ".join(self.allowed)
        elif self.kind is Kind.INTEGER:
            rule = f"integer in [{self.minimum}, {self.maximum}]"
        elif self.kind is Kind.ICD9:
            rule = "ICD-9 code (e.g. 250.83, V57, E909; leading zeros may be dropped)"
        else:
            rule = f"text of at most {self.max_length} characters"
        return rule + ("; '?' = missing" if self.nullable else "; required")


def _medication(raw_name: str) -> ColumnSpec:
    return ColumnSpec(
        raw_name,
        raw_name.replace("-", "_"),
        Kind.CATEGORY,
        allowed=MEDICATION_STATES,
        description="dose change of this drug during the encounter",
    )


MEDICATIONS: tuple[str, ...] = (
    "metformin",
    "repaglinide",
    "nateglinide",
    "chlorpropamide",
    "glimepiride",
    "acetohexamide",
    "glipizide",
    "glyburide",
    "tolbutamide",
    "pioglitazone",
    "rosiglitazone",
    "acarbose",
    "miglitol",
    "troglitazone",
    "tolazamide",
    "examide",
    "citoglipton",
    "insulin",
    "glyburide-metformin",
    "glipizide-metformin",
    "glimepiride-pioglitazone",
    "metformin-rosiglitazone",
    "metformin-pioglitazone",
)


def _count(raw_name: str, maximum: int, description: str, minimum: int = 0) -> ColumnSpec:
    return ColumnSpec(
        raw_name, raw_name, Kind.INTEGER, minimum=minimum, maximum=maximum, description=description
    )


def _code(raw_name: str, maximum: int, description: str) -> ColumnSpec:
    return ColumnSpec(
        raw_name,
        raw_name,
        Kind.INTEGER,
        minimum=1,
        maximum=maximum,
        description=description,
        coded=True,
    )


def _lab_result(raw_name: str, name: str, *high: str) -> ColumnSpec:
    # 'None' is a category of its own (the test was not done), never a missing value.
    return ColumnSpec(
        raw_name,
        name,
        Kind.CATEGORY,
        allowed=("None", "Norm", *high),
        description="'None' = not measured",
    )


COLUMNS: tuple[ColumnSpec, ...] = (
    ColumnSpec(
        "encounter_id",
        "encounter_id",
        Kind.INTEGER,
        minimum=1,
        maximum=10**12,
        description="unique encounter id; grows with time",
    ),
    ColumnSpec(
        "patient_nbr",
        "patient_nbr",
        Kind.INTEGER,
        minimum=1,
        maximum=10**12,
        description="patient id; several encounters per patient",
    ),
    ColumnSpec(
        "race",
        "race",
        Kind.CATEGORY,
        nullable=True,
        allowed=("Caucasian", "AfricanAmerican", "Hispanic", "Asian", "Other"),
    ),
    ColumnSpec(
        "gender",
        "gender",
        Kind.CATEGORY,
        allowed=("Female", "Male", "Unknown/Invalid"),
        description="'Unknown/Invalid' passes the contract and is removed by cleaning",
    ),
    ColumnSpec("age", "age", Kind.CATEGORY, allowed=AGE_BANDS, description="ten-year band"),
    ColumnSpec(
        "weight",
        "weight",
        Kind.CATEGORY,
        nullable=True,
        allowed=WEIGHT_BANDS,
        description="pounds, 25-lb band; mostly missing",
    ),
    _code("admission_type_id", 30, "coded admission type (IDs_mapping.csv)"),
    _code("discharge_disposition_id", 40, "coded discharge disposition"),
    _code("admission_source_id", 40, "coded admission source"),
    _count("time_in_hospital", 14, "days in hospital (the extract keeps 1-14)", minimum=1),
    ColumnSpec("payer_code", "payer_code", Kind.TEXT, nullable=True, max_length=8),
    ColumnSpec(
        "medical_specialty",
        "medical_specialty",
        Kind.TEXT,
        nullable=True,
        max_length=64,
        description="specialty of the admitting physician",
    ),
    _count("num_lab_procedures", 300, "lab tests during the encounter"),
    _count("num_procedures", 50, "non-lab procedures during the encounter"),
    _count("num_medications", 200, "distinct generic drugs given"),
    _count("number_outpatient", 200, "outpatient visits in the year before"),
    _count("number_emergency", 200, "emergency visits in the year before"),
    _count("number_inpatient", 200, "inpatient visits in the year before"),
    ColumnSpec("diag_1", "diag_1", Kind.ICD9, nullable=True, description="primary diagnosis"),
    ColumnSpec("diag_2", "diag_2", Kind.ICD9, nullable=True, description="secondary diagnosis"),
    ColumnSpec("diag_3", "diag_3", Kind.ICD9, nullable=True, description="additional diagnosis"),
    _count("number_diagnoses", 50, "diagnoses entered", minimum=1),
    _lab_result("max_glu_serum", "max_glu_serum", ">200", ">300"),
    _lab_result("A1Cresult", "a1c_result", ">7", ">8"),
    *(_medication(drug) for drug in MEDICATIONS),
    ColumnSpec(
        "change",
        "change",
        Kind.CATEGORY,
        allowed=("No", "Ch"),
        description="any diabetic medication changed",
    ),
    ColumnSpec(
        "diabetesMed",
        "diabetes_med",
        Kind.CATEGORY,
        allowed=("No", "Yes"),
        description="any diabetic medication prescribed",
    ),
)

LABEL = ColumnSpec(
    "readmitted",
    "readmitted",
    Kind.CATEGORY,
    allowed=("NO", ">30", "<30"),
    description="readmission after discharge; the target is '<30'",
)

RAW_TO_NAME: dict[str, str] = {spec.raw_name: spec.name for spec in (*COLUMNS, LABEL)}
ID_COLUMNS: tuple[str, ...] = ("encounter_id", "patient_nbr")
FEATURE_COLUMNS: tuple[str, ...] = tuple(s.name for s in COLUMNS if s.name not in ID_COLUMNS)
MEDICATION_COLUMNS: tuple[str, ...] = tuple(d.replace("-", "_") for d in MEDICATIONS)
INTEGER_COLUMNS: tuple[str, ...] = tuple(s.name for s in COLUMNS if s.kind is Kind.INTEGER)


def column_specs(with_label: bool) -> tuple[ColumnSpec, ...]:
    """Return the column contract, with or without the ``readmitted`` label."""
    return (*COLUMNS, LABEL) if with_label else COLUMNS


def contract_markdown() -> str:
    """Render the contract as a Markdown table (the written, human-readable form)."""
    lines = ["| column (extract) | name | rule | meaning |", "| --- | --- | --- | --- |"]
    for spec in column_specs(with_label=True):
        lines.append(f"| `{spec.raw_name}` | `{spec.name}` | {spec.rule()} | {spec.description} |")
    return "\n".join(lines)
