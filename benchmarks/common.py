"""What every benchmark starts from: the configured extract, prepared into a given folder."""

from __future__ import annotations

import pandas as pd

from healthpredict.data.timeline import INITIAL_WINDOW, load_test_window, load_window
from healthpredict.pipelines.prepare_data import prepare_data
from healthpredict.settings import Settings


def prepared_windows(settings: Settings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Prepare the extract (HEALTHPREDICT_DATA_SOURCE) and return (training window, test window)."""
    prepared = prepare_data(settings)
    train = load_window(settings.data.prepared_dir, prepared.manifest, INITIAL_WINDOW)
    return train, load_test_window(settings.data.prepared_dir, prepared.manifest)
