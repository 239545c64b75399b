"""The real extract, prepared once per test session into a temporary folder."""

from __future__ import annotations

import pytest

from healthpredict.pipelines.prepare_data import PreparationSummary, prepare_data
from healthpredict.settings import Settings


@pytest.fixture(scope="session")
def real_settings(real_source: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings over the real extract with the default timeline and a quicker bootstrap."""
    return Settings(
        data_source=real_source, data_dir=tmp_path_factory.mktemp("real"), bootstrap_rounds=100
    )


@pytest.fixture(scope="session")
def real_prepared(real_settings: Settings) -> PreparationSummary:
    """The real extract validated, cleaned and cut with the default settings."""
    return prepare_data(real_settings)
