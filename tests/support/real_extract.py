"""The real extract, prepared once per test session into a temporary folder.

For the tests marked ``real_data``: the data tests (tests/data) and the model behaviour tests
(tests/modeling).
"""

from __future__ import annotations

import pytest

from healthpredict.pipelines.prepare_data import PreparationSummary, prepare_data
from healthpredict.settings import Settings


@pytest.fixture(scope="session")
def real_settings(real_source: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings over the real extract, a quicker bootstrap, and the offline 70 % window.

    The offline quality checks (and the README's figures) train on the oldest 70 %; the
    simulation's default 30 % window is exercised by tests/test_demo.py.
    """
    return Settings.from_flat(
        data_source=real_source,
        data_dir=tmp_path_factory.mktemp("real"),
        bootstrap_rounds=100,
        initial_window_fraction=0.7,
        n_batches=3,
    )


@pytest.fixture(scope="session")
def real_prepared(real_settings: Settings) -> PreparationSummary:
    """The real extract validated, cleaned and cut with the default settings."""
    return prepare_data(real_settings)
