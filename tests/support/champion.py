"""A real registered champion trained on a synthetic extract, for the service and batch-job tests.

The session's :func:`champion` is shared by the tests that do not move the alias (tests/serving,
tests/pipelines); a test that moves it builds its own with :func:`make_champion`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from healthpredict.pipelines.prepare_data import prepare_data
from healthpredict.pipelines.train_and_register import train_and_register
from healthpredict.settings import Settings
from tests.conftest import make_settings
from tests.synthetic import make_raw_frame, write_csv


@dataclass(frozen=True)
class Champion:
    """A registry holding a trained champion, and the settings that point at it."""

    settings: Settings
    version: str
    folder: Path


def make_champion(folder: Path, rows: int = 2500, seed: int = 11) -> Champion:
    """Prepare a synthetic extract, train and register: the first model becomes champion."""
    source = folder / "diabetic_data.csv"
    write_csv(make_raw_frame(rows, seed=seed), str(source))
    settings = make_settings(folder, source)
    prepare_data(settings)
    summary = train_and_register(settings)
    assert summary.registered.alias == "champion"
    return Champion(settings, summary.registered.version, folder)


@pytest.fixture(scope="session")
def champion(tmp_path_factory: pytest.TempPathFactory) -> Champion:
    """One champion shared by the tests that do not move the alias."""
    return make_champion(tmp_path_factory.mktemp("champion"))
