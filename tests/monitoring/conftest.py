"""Prepared synthetic batches for the monitoring tests (contract names, typed, labelled)."""

from __future__ import annotations

import pandas as pd
import pytest

from healthpredict.data.prepare import clean
from healthpredict.data.pseudonym import pseudonymise
from healthpredict.data.validate import validate_raw
from tests.synthetic import make_raw_frame


def prepared_frame(n_rows: int, seed: int) -> pd.DataFrame:
    """A synthetic extract through the real contract check, cleaning and pseudonymisation."""
    valid = validate_raw(make_raw_frame(n_rows, seed=seed)).valid
    cleaned, _ = clean(valid)
    return pseudonymise(cleaned, b"test-salt").reset_index(drop=True)


@pytest.fixture(scope="session")
def batch() -> pd.DataFrame:
    """About 3,000 prepared encounters."""
    return prepared_frame(3000, seed=5)
