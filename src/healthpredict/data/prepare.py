"""Cleaning: remove encounters that cannot be readmitted, derive the target once, order in time.

The target is computed here and only here. Everything downstream (training, evaluation, drift
scenarios) reads the ``readmitted_30d`` column, so an injected label change is never undone by a
later recomputation from ``readmitted``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

TARGET = "readmitted_30d"
POSITIVE_LABEL = "<30"
# Discharged to death or hospice (IDs_mapping.csv): such a patient cannot be readmitted.
DEATH_OR_HOSPICE_DISPOSITIONS = frozenset({11, 13, 14, 19, 20, 21})
VALID_GENDERS = frozenset({"Female", "Male"})


@dataclass(frozen=True)
class CleaningReport:
    """How many encounters cleaning removed and why, and the resulting positive rate."""

    n_input: int
    n_death_or_hospice: int
    n_invalid_gender: int
    n_output: int
    positive_rate: float

    def summary(self) -> str:
        """One readable line."""
        return (
            f"{self.n_input:,} valid encounters -> {self.n_output:,} kept "
            f"({self.n_death_or_hospice:,} death/hospice discharges, "
            f"{self.n_invalid_gender:,} invalid gender removed); "
            f"30-day readmission rate {self.positive_rate:.2%}"
        )


def clean(valid: pd.DataFrame) -> tuple[pd.DataFrame, CleaningReport]:
    """Remove ineligible encounters, add the binary target, order by ``encounter_id``.

    Args:
        valid: Typed rows that passed the contract, including the ``readmitted`` label.

    Returns:
        The cleaned frame (``readmitted`` replaced by ``readmitted_30d`` in {0, 1}) and a report.
    """
    died = valid["discharge_disposition_id"].isin(DEATH_OR_HOSPICE_DISPOSITIONS)
    bad_gender = ~valid["gender"].isin(VALID_GENDERS)
    kept = valid.loc[~died & ~bad_gender].copy()
    kept[TARGET] = (kept.pop("readmitted") == POSITIVE_LABEL).astype("int8")
    kept = kept.sort_values("encounter_id", kind="stable").reset_index(drop=True)
    report = CleaningReport(
        n_input=len(valid),
        n_death_or_hospice=int(died.sum()),
        n_invalid_gender=int((bad_gender & ~died).sum()),
        n_output=len(kept),
        positive_rate=float(kept[TARGET].mean()) if len(kept) else 0.0,
    )
    return kept, report
